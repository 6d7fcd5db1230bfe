"""Importers for the public entity-alignment layouts (``FORMATS``).

``dbp15k`` / ``mmkb`` / ``dwy100k`` / id-converted ``openea`` read one id layout (EVA, MCLEA,
MEAformer, BootEA), each optional part used when present:

==========================  =================================================================
``ent_ids_1``/``ent_ids_2``  ``raw_id<TAB>URI`` per entity (left / right); required
``triples_1``/``triples_2``  ``head<TAB>relation<TAB>tail`` (raw ids); required (may be empty)
gold links                   ``left<TAB>right``: ``ill_ent_ids`` (DBP15K, MMKB), ``ref_ent_ids``
                             (OpenEA); DWY100K: the union of ``ref_ent_ids`` and ``sup_ent_ids``
``rel_ids`` (``_1``/``_2``)  ``raw_relation_id<TAB>relation URI`` (optional)
``training_attrs_1/2``       ``entity URI<TAB>attribute<TAB>attribute...`` (names only, optional)
names JSON (``--names``)     ``[[raw_id, [token, ...]], ...]``, e.g. DBP15K translated names
image pickle                 ``{raw_id: vector}``, e.g. EVA's ResNet features; for ``mmkb`` also
                             ``<folder>_id_img_feature_dict.pkl`` in the folder (MCLEA's name)
==========================  =================================================================

``openea`` also reads OpenEA's own layout (the 15K / 100K downloads): ``rel_triples_1/2``
(``head<TAB>relation<TAB>tail`` URIs), ``attr_triples_1/2`` (``URI<TAB>attribute<TAB>value``)
and as gold the union of ``ent_links`` and the ``721_5fold/k/{train,valid,test}_links`` found.

Raw ids are re-mapped to dense per-side ids by a seeded permutation, so that no id carries
alignment signal (in DBP15K gold pairs are ``(i, i + 10500)``).  Names come from the URI's last
segment; a Freebase mid (``/m/0abc``, MMKB's FB15K side) is opaque: no name.  Every problem is
reported as a :class:`DataError` naming the file, the line and the problem; nothing is written
unless the whole import validates.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from psqe_ray.config import fingerprint
from psqe_ray.errors import DataError
from psqe_ray.io.writer import DatasetWriter
from psqe_ray.io.fs import StorageOptions
from psqe_ray.io.importers.graphs import (read_attributes, read_id_graphs, read_links,
                                          read_uri_graphs, uri_name)
from psqe_ray.io.importers.layouts import FORMATS, MMKB_IMAGES, OPENEA_LINKS
from psqe_ray.io.importers.side_files import read_image_features, read_names
from psqe_ray.io.importers.text import IdMap, Source, map_or_fail
from psqe_ray.schemas import SIDES, local_name

log = logging.getLogger(__name__)


def import_pair(fmt: str, src_url: str, dataset_url: str, *, names_url: str | None = None,
                image_features_url: str | None = None, seed: int = 0,
                storage_options: StorageOptions = None) -> dict:
    """Import a folder in one of the :data:`FORMATS` layouts into a psqe-ray dataset.

    Returns the manifest (or the existing one when the same import is already there).
    """
    if fmt not in FORMATS:
        raise DataError(fmt, f"unknown import format; choose one of {sorted(FORMATS)}")
    t0 = time.monotonic()
    src = Source(src_url, storage_options)
    rng = np.random.default_rng(seed)
    # OpenEA's own URI layout when there is no id-converted ent_ids_1 beside it
    uri_layout = fmt == "openea" and not src.has("ent_ids_1") and src.has("rel_triples_1")
    graphs = read_uri_graphs(src) if uri_layout else read_id_graphs(src)
    maps = {side: IdMap(graphs[side].raw, rng) for side in SIDES}

    tables: dict[str, list[pa.Table]] = {"entities": [], "relations": [], "triples": [],
                                         "attributes": []}
    names = (read_names(names_url, maps, storage_options, src.digests) if names_url
             else {s: {} for s in SIDES})
    triple_notes: dict[str, dict[str, int]] = {}
    for k, side in enumerate(SIDES, 1):
        idmap, graph = maps[side], graphs[side]
        n = len(idmap)
        ent_uri = [""] * n
        ent_name: list[str | None] = [None] * n
        for new_id, uri in zip(idmap.new.tolist(), graph.uris):
            ent_uri[new_id] = uri
            # an empty (or blank) name is no name: the URI's, else null (absent)
            given = names[side].get(new_id)
            ent_name[new_id] = given if given and given.strip() else uri_name(uri)
        tables["entities"].append(pa.table({
            "side": [side] * n, "entity_id": np.arange(n, dtype=np.int64),
            "uri": ent_uri, "name": pa.array(ent_name, pa.string())}))

        rows, linenos, where = graph.triples, graph.triple_lines, graph.triple_file
        head = map_or_fail(idmap, rows[:, 0], linenos, where, f"{side} entity (head)")
        tail = map_or_fail(idmap, rows[:, 2], linenos, where, f"{side} entity (tail)")
        raw_rel = np.unique(rows[:, 1])
        rel_uris = graph.rel_uris
        if rel_uris:
            missing = [r for r in raw_rel.tolist() if r not in rel_uris]
            if missing:
                i = int(np.flatnonzero(rows[:, 1] == missing[0])[0])
                raise DataError(where, f"relation id {missing[0]} is not in rel_ids",
                                line=int(linenos[i]))
        rel_map = IdMap(raw_rel, rng)
        relation, _ = rel_map.lookup(rows[:, 1])
        n_rel = len(raw_rel)
        rel_uri: list[str | None] = [None] * n_rel
        for raw_id, new_id in zip(raw_rel.tolist(), rel_map.new.tolist()):
            rel_uri[new_id] = rel_uris.get(raw_id)
        tables["relations"].append(pa.table({
            "side": pa.array([side] * n_rel, pa.string()),
            "relation_id": np.arange(n_rel, dtype=np.int64),
            "uri": pa.array(rel_uri, pa.string()),
            "name": pa.array([local_name(u) if u else None for u in rel_uri], pa.string())}))
        order = np.lexsort((tail, relation, head))
        head, relation, tail = head[order], relation[order], tail[order]
        # a triple listed twice is one fact: kept once, the drop counted (manifest, log);
        # self-loops (head == tail) are facts like any other: kept, counted
        dup = np.zeros(len(head), bool)
        dup[1:] = (head[1:] == head[:-1]) & (relation[1:] == relation[:-1]) & (tail[1:] == tail[:-1])
        if dup.any():
            log.warning("%s: %d duplicate triple(s) dropped (each kept once)", where,
                        int(dup.sum()))
            head, relation, tail = head[~dup], relation[~dup], tail[~dup]
        triple_notes[side] = {"duplicates_dropped": int(dup.sum()),
                              "self_loops": int((head == tail).sum())}
        tables["triples"].append(pa.table({
            "side": pa.array([side] * len(head), pa.string()), "head": head,
            "relation": relation, "tail": tail}))

        aname = f"attr_triples_{k}" if uri_layout else f"training_attrs_{k}"
        if src.has(aname):
            tables["attributes"].append(read_attributes(src, aname, side, idmap, graph.uris,
                                                         with_values=uri_layout))

    layout = FORMATS[fmt]
    candidates = OPENEA_LINKS if uri_layout else layout.gold
    gold_names = [g for g in candidates if src.has(g)]
    if not (uri_layout or layout.all_gold):
        gold_names = gold_names[:1]  # the first found, in order of preference
    gold = None
    if gold_names:
        pairs = [read_links(src, g, maps, graphs) for g in gold_names]
        # train / valid / test splits (and all links beside them): their union, each pair once
        pairs = np.unique(np.concatenate(pairs), axis=0) if len(pairs) > 1 else pairs[0]
        gold = pa.table({"left_id": pairs[:, 0], "right_id": pairs[:, 1]})

    if fmt == "mmkb" and image_features_url is None:
        pkl = MMKB_IMAGES.format(folder=src.url.rstrip("/").rsplit("/", 1)[-1])
        if src.has(pkl):
            image_features_url = src.where(pkl)
    images = (read_image_features(image_features_url, maps, storage_options, src.digests)
              if image_features_url else None)

    config = {"format": fmt, "seed": seed, "inputs": src.digests}
    fp = fingerprint(config)
    with DatasetWriter(dataset_url, stage="import", fingerprint=fp,
                       storage_options=storage_options) as writer:
        if writer.committed:
            log.info("%s already holds this import (fingerprint %s); nothing to do",
                     dataset_url, fp)
            from psqe_ray.io.dataset import Dataset
            return Dataset(dataset_url, storage_options=storage_options).manifest
        for name, parts in tables.items():
            for part in parts:
                writer.write(name, part)
        if gold is not None:
            writer.write("gold", gold)
        if images is not None:
            for side in SIDES:
                writer.write("features/image", images[side])
        manifest = writer.commit(meta={
            "source": src_url, "format": fmt, "seed": seed, "names": names_url,
            "image_features": image_features_url, "gold_file": "+".join(gold_names) or None,
            "layout": "openea-uri" if uri_layout else "ids", "triples": triple_notes,
            "import_seconds": round(time.monotonic() - t0, 3)})
    log.info("imported %s -> %s in %.1f s", src_url, dataset_url, time.monotonic() - t0)
    return manifest
