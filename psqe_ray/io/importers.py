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

import hashlib
import json
import logging
import pickle
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from psqe_ray.config import fingerprint
from psqe_ray.errors import DataError
from psqe_ray.io.dataset import DatasetWriter
from psqe_ray.io.fs import StorageOptions, exists, join, read_bytes, resolve
from psqe_ray.schemas import SIDES, feature_schema, local_name

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Layout:
    """What a format reads besides the graphs: its gold link files."""

    gold: tuple[str, ...]  # gold link files, in order of preference
    all_gold: bool = False  # read every one present (train / test splits) and take the union


FORMATS = {
    "dbp15k": Layout(("ill_ent_ids", "ref_ent_ids")),
    # the id-converted OpenEA layout (EVA / MCLEA); OpenEA's own URI layout: OPENEA_LINKS
    "openea": Layout(("ref_ent_ids", "ill_ent_ids")),
    # MMKB FB15K-DB15K / FB15K-YAGO15K converted to the DBP15K layout by MCLEA / MEAformer
    "mmkb": Layout(("ill_ent_ids",)),
    # DWY100K as BootEA ships it: 70 % test links in ref_ent_ids, 30 % seeds in sup_ent_ids
    "dwy100k": Layout(("ref_ent_ids", "sup_ent_ids", "ill_ent_ids"), all_gold=True),
}
# OpenEA's URI layout (rel_triples_1/2, attr_triples_1/2): all links, then the 5 folds' splits
OPENEA_LINKS = ("ent_links", *(f"721_5fold/{k}/{part}_links" for k in range(1, 6)
                               for part in ("train", "valid", "test")))
# MCLEA's converter writes the MMKB image features next to the pair as <folder>_id_img_feature_dict.pkl
MMKB_IMAGES = "{folder}_id_img_feature_dict.pkl"


@dataclass
class _Source:
    """One source folder: reads text files by name, hashing what it reads for the fingerprint."""

    url: str
    storage_options: StorageOptions = None
    digests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.root = resolve(self.url, self.storage_options)
        if not exists(self.fs, self.root, self.url):
            raise DataError(self.url, "source folder does not exist")

    def where(self, name: str) -> str:
        return join(self.url, name)

    def has(self, name: str) -> bool:
        return exists(self.fs, join(self.root, name), self.where(name))

    def lines(self, name: str) -> list[str]:
        raw = read_bytes(self.fs, join(self.root, name), self.where(name))
        self.digests[name] = hashlib.sha256(raw).hexdigest()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise DataError(self.where(name), f"not UTF-8 text ({exc.reason})", line=line) from None
        return text.split("\n")


def _fields(line: str, where: str, lineno: int, n: int | None, what: str) -> list[str]:
    parts = line.rstrip("\r").split("\t")
    if (n is not None and len(parts) != n) or (n is None and len(parts) < 1):
        raise DataError(where, f"malformed line: expected {n} tab-separated fields ({what}), "
                        f"got {len(parts)}: {line[:80]!r}", line=lineno)
    return parts


_INT64 = (-(2**63), 2**63 - 1)


def _int(text: str, where: str, lineno: int | None, what: str) -> int:
    prefix = "malformed line: " if lineno is not None else ""
    try:
        if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
            raise ValueError(text)
        value = int(text)
    except (ValueError, TypeError, OverflowError):
        raise DataError(where, f"{prefix}{what} {str(text)[:40]!r} is not an integer",
                        line=lineno) from None
    if not _INT64[0] <= value <= _INT64[1]:
        raise DataError(where, f"{what} {str(text)[:40]} does not fit in 64 bits", line=lineno)
    return value


class _IdMap:
    """Raw ids of one side -> dense new ids (a seeded permutation of the file order)."""

    def __init__(self, raw: np.ndarray, rng: np.random.Generator) -> None:
        self.raw = raw
        self.new = rng.permutation(len(raw)).astype(np.int64)
        order = np.argsort(raw, kind="stable")
        self._sorted_raw = raw[order]
        self._sorted_new = self.new[order]

    def __len__(self) -> int:
        return len(self.raw)

    def lookup(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New ids for ``raw`` and a mask of which raw ids are known."""
        if len(self._sorted_raw) == 0:
            return np.zeros(len(raw), np.int64), np.zeros(len(raw), bool)
        pos = np.searchsorted(self._sorted_raw, raw).clip(0, len(self._sorted_raw) - 1)
        known = self._sorted_raw[pos] == raw
        return self._sorted_new[pos], known


def _read_entities(src: _Source, name: str) -> tuple[np.ndarray, list[str], list[int]]:
    where = src.where(name)
    ids: list[int] = []
    uris: list[str] = []
    seen: dict[int, int] = {}
    linenos: list[int] = []
    for lineno, line in enumerate(src.lines(name), 1):
        if not line.strip():
            continue
        raw_id, uri = _fields(line, where, lineno, 2, "id, URI")
        eid = _int(raw_id, where, lineno, "entity id")
        if eid in seen:
            raise DataError(where, f"duplicate entity id {eid} (first on line {seen[eid]})",
                            line=lineno)
        seen[eid] = lineno
        ids.append(eid)
        uris.append(uri.strip())
        linenos.append(lineno)
    if not ids:
        raise DataError(where, "empty graph: the file lists no entities")
    return np.asarray(ids, dtype=np.int64), uris, linenos


def _read_id_rows(src: _Source, name: str, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse lines of ``n`` integer fields; return (rows x n array, line numbers)."""
    where = src.where(name)
    rows: list[list[int]] = []
    linenos: list[int] = []
    for lineno, line in enumerate(src.lines(name), 1):
        if not line.strip():
            continue
        parts = _fields(line, where, lineno, n, what)
        rows.append([_int(p, where, lineno, "id") for p in parts])
        linenos.append(lineno)
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, n)
    return arr, np.asarray(linenos, dtype=np.int64)


def _map_or_fail(idmap: _IdMap, raw: np.ndarray, linenos: np.ndarray, where: str,
                 what: str) -> np.ndarray:
    new, known = idmap.lookup(raw)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(where, f"unknown {what} {int(raw[i])} ({int((~known).sum())} such "
                        "reference(s))", line=int(linenos[i]))
    return new


def _read_names(url: str, maps: dict[str, _IdMap], storage_options: StorageOptions,
                digests: dict[str, str]) -> dict[str, dict[int, str]]:
    fs, path = resolve(url, storage_options)
    raw = read_bytes(fs, path, url)
    digests["names"] = hashlib.sha256(raw).hexdigest()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise DataError(url, f"malformed JSON: {exc}") from None
    if not isinstance(data, list):
        raise DataError(url, "expected a JSON list of [id, [tokens]] entries")
    ids: list[int] = []
    names: list[str] = []
    malformed: DataError | None = None  # raised only if no unknown id comes before it
    for k, entry in enumerate(data):
        try:
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], int)
                    or not isinstance(entry[1], (list, str))):
                raise DataError(url, f"entry {k} is not [id, [tokens]]: {str(entry)[:80]}")
            raw_id, tokens = entry
            ids.append(_int(raw_id, url, None, f"entry {k}: entity id"))
        except DataError as exc:
            malformed = exc
            break
        names.append(tokens if isinstance(tokens, str) else " ".join(str(t) for t in tokens))
    # one vectorised lookup for all entries instead of two per entry
    side_of, new_ids = _locate(np.asarray(ids, dtype=np.int64), maps)
    if (side_of < 0).any():
        k = int(np.flatnonzero(side_of < 0)[0])
        raise DataError(url, f"entry {k}: unknown entity id {ids[k]}")
    if malformed is not None:
        raise malformed
    out: dict[str, dict[int, str]] = {s: {} for s in SIDES}
    for side_index, new_id, name in zip(side_of.tolist(), new_ids.tolist(), names):
        out[SIDES[side_index]][new_id] = name
    return out


def _locate(raw: np.ndarray, maps: dict[str, _IdMap]) -> tuple[np.ndarray, np.ndarray]:
    """For raw ids of either graph: side index (0 left, 1 right, -1 unknown) and new id."""
    side_of = np.full(len(raw), -1, dtype=np.int64)
    new_ids = np.zeros(len(raw), dtype=np.int64)
    for i, side in enumerate(SIDES):
        new, known = maps[side].lookup(raw)
        take = known & (side_of < 0)
        side_of[take] = i
        new_ids[take] = new[take]
    return side_of, new_ids


def _read_image_features(url: str, maps: dict[str, _IdMap], storage_options: StorageOptions,
                         digests: dict[str, str]) -> dict[str, pa.Table]:
    fs, path = resolve(url, storage_options)
    raw = read_bytes(fs, path, url)
    digests["image_features"] = hashlib.sha256(raw).hexdigest()
    try:
        data = pickle.loads(raw)  # noqa: S301 - a file the user names, as in EVA/MCLEA
    except Exception as exc:  # noqa: BLE001
        raise DataError(url, f"unreadable pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(url, "expected a non-empty pickled dict {entity id: vector}")
    dim = None
    per_side: dict[str, tuple[np.ndarray, np.ndarray]] = {
        s: (np.zeros((len(maps[s]), 0), np.float32), np.zeros(len(maps[s]), bool)) for s in SIDES}
    for key, vec in data.items():
        raw_id = _int(key, url, None, f"key {key!r}: entity id")
        try:
            arr = np.asarray(vec, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise DataError(url, f"key {key!r}: not an id and a numeric vector ({exc})") from None
        if dim is None:
            dim = len(arr)
            if dim == 0:
                raise DataError(url, f"key {key!r}: empty vector")
            per_side = {s: (np.zeros((len(maps[s]), dim), np.float32),
                            np.zeros(len(maps[s]), bool)) for s in SIDES}
        if len(arr) != dim:
            raise DataError(url, f"key {key!r}: vector of dimension {len(arr)}, expected {dim} "
                            "(the first vector's)")
        if not np.isfinite(arr).all():
            raise DataError(url, f"key {key!r}: vector holds NaN or infinity")
        for side in SIDES:
            new, known = maps[side].lookup(np.asarray([raw_id], dtype=np.int64))
            if known[0]:
                vecs, present = per_side[side]
                vecs[new[0]] = arr
                present[new[0]] = True
                break
        else:
            raise DataError(url, f"key {key!r}: unknown entity id")
    tables = {}
    for side in SIDES:
        vecs, present = per_side[side]
        n = len(present)
        tables[side] = pa.Table.from_arrays(
            [pa.array([side] * n), pa.array(np.arange(n, dtype=np.int64)),
             pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim),
             pa.array(present)], schema=feature_schema(dim))
    return tables


_FREEBASE_MID = re.compile(r"^(?:/[mg]/|https?://rdf\.freebase\.com/ns/[mg]\.)[0-9a-z_]+$")


def _uri_name(uri: str) -> str | None:
    """An entity's name from its URI (N-Triples ``<...>`` dropped), or none for an opaque id.

    A Freebase mid (``/m/027rn``, MMKB's FB15K side) names nothing: it has no name.
    """
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    if _FREEBASE_MID.match(uri):
        return None
    return local_name(uri) or None


@dataclass
class _Graph:
    """One side as read from the source, before the id permutation (raw ids in file order)."""

    raw: np.ndarray  # raw entity ids
    uris: list[str]
    lines: list[int]  # line of each entity in its file (the id layouts' ent_ids_k)
    triples: np.ndarray  # (n, 3) raw head, relation, tail
    triple_lines: np.ndarray
    triple_file: str
    rel_uris: dict[int, str]  # raw relation id -> URI; empty: relations unnamed
    codes: dict[str, int] | None = None  # URI -> raw id (OpenEA's URI layout: links name URIs)


def _read_id_graphs(src: _Source) -> dict[str, _Graph]:
    """The id layouts (DBP15K, id-converted OpenEA, MMKB, DWY100K): ent_ids_k, triples_k, rel_ids."""
    ents = {side: _read_entities(src, f"ent_ids_{k}") for k, side in enumerate(SIDES, 1)}
    left, (right, _, right_lines) = ents["left"][0], ents["right"]
    overlap = np.isin(right, left)
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        raise DataError(src.where("ent_ids_2"), f"raw entity id {int(right[i])} "
                        f"also appears in ent_ids_1 ({int(overlap.sum())} shared ids); the "
                        "layout needs one id space for both graphs", line=right_lines[i])
    rel_uris: dict[int, str] = {}
    for name in ("rel_ids", "rel_ids_1", "rel_ids_2"):  # DWY100K / JAPE: one file per side
        if src.has(name):
            where = src.where(name)
            for lineno, line in enumerate(src.lines(name), 1):
                if line.strip():
                    rid, ruri = _fields(line, where, lineno, 2, "id, relation URI")
                    rel_uris[_int(rid, where, lineno, "relation id")] = ruri.strip()
    graphs = {}
    for k, side in enumerate(SIDES, 1):
        rows, lines = _read_id_rows(src, f"triples_{k}", 3, "head, relation, tail")
        graphs[side] = _Graph(*ents[side], rows, lines, src.where(f"triples_{k}"), rel_uris)
    return graphs


def _read_uri_graphs(src: _Source) -> dict[str, _Graph]:
    """OpenEA's own layout: ``rel_triples_k`` of URIs (``head<TAB>relation<TAB>tail``).

    Entities and relations are numbered in order of first appearance, per side.
    """
    graphs = {}
    for k, side in enumerate(SIDES, 1):
        name = f"rel_triples_{k}"
        where = src.where(name)
        ents: dict[str, int] = {}
        rels: dict[str, int] = {}
        rows: list[tuple[int, int, int]] = []
        lines: list[int] = []
        for lineno, line in enumerate(src.lines(name), 1):
            if not line.strip():
                continue
            h, r, t = (p.strip() for p in _fields(line, where, lineno, 3, "head, relation, tail"))
            if not (h and r and t):
                raise DataError(where, "malformed line: an empty URI", line=lineno)
            rows.append((ents.setdefault(h, len(ents)), rels.setdefault(r, len(rels)),
                         ents.setdefault(t, len(ents))))
            lines.append(lineno)
        if not ents:
            raise DataError(where, "empty graph: the file lists no relation triples")
        graphs[side] = _Graph(np.arange(len(ents), dtype=np.int64), list(ents), [],
                              np.asarray(rows, np.int64), np.asarray(lines, np.int64), where,
                              {i: u for u, i in rels.items()}, codes=ents)
    return graphs


def _read_attributes(src: _Source, name: str, side: str, idmap: _IdMap, uris: list[str],
                     with_values: bool) -> pa.Table:
    """``training_attrs_k`` (``URI<TAB>attribute<TAB>...``: names only) or OpenEA's
    ``attr_triples_k`` (``URI<TAB>attribute<TAB>value``; a value with tabs is joined by spaces,
    a missing or empty value is null)."""
    where = src.where(name)
    by_uri = {u: i for i, u in zip(idmap.new.tolist(), uris)}
    ent: list[int] = []
    attr: list[str] = []
    value: list[str | None] = []
    for lineno, line in enumerate(src.lines(name), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 2 or (with_values and not parts[1].strip()):
            raise DataError(where, "malformed line: expected an entity URI and at least "
                            "one attribute", line=lineno)
        eid = by_uri.get(parts[0].strip())
        if eid is None:
            raise DataError(where, f"unknown {side} entity {parts[0][:80]!r}", line=lineno)
        if with_values:
            ent.append(eid)
            attr.append(parts[1].strip())
            value.append(" ".join(p.strip() for p in parts[2:]).strip() or None)
            continue
        for a in parts[1:]:
            if a.strip():
                ent.append(eid)
                attr.append(a.strip())
                value.append(None)
    return pa.table({"side": pa.array([side] * len(ent), pa.string()),
                     "entity_id": np.asarray(ent, dtype=np.int64),
                     "attribute": pa.array(attr, pa.string()),
                     "value": pa.array(value, pa.string())})


def _read_links(src: _Source, name: str, maps: dict[str, _IdMap],
                graphs: dict[str, _Graph]) -> np.ndarray:
    """One gold file -> (n, 2) new (left, right) ids; raw ids, or URIs in OpenEA's own layout."""
    where = src.where(name)
    if graphs["left"].codes is None:
        rows, lines = _read_id_rows(src, name, 2, "left id, right id")
    else:
        pairs: list[list[int]] = []
        linelist: list[int] = []
        for lineno, line in enumerate(src.lines(name), 1):
            if not line.strip():
                continue
            uris = [p.strip() for p in _fields(line, where, lineno, 2, "left URI, right URI")]
            for side, uri in zip(SIDES, uris):
                if uri not in graphs[side].codes:
                    raise DataError(where, f"unknown {side} entity {uri[:80]!r}", line=lineno)
            pairs.append([graphs[s].codes[u] for s, u in zip(SIDES, uris)])
            linelist.append(lineno)
        rows = np.asarray(pairs, np.int64).reshape(-1, 2)
        lines = np.asarray(linelist, np.int64)
    return np.stack([_map_or_fail(maps[s], rows[:, i], lines, where, f"{s} entity")
                     for i, s in enumerate(SIDES)], axis=1)


def import_pair(fmt: str, src_url: str, dataset_url: str, *, names_url: str | None = None,
                image_features_url: str | None = None, seed: int = 0,
                storage_options: StorageOptions = None) -> dict:
    """Import a folder in one of the :data:`FORMATS` layouts into a psqe-ray dataset.

    Returns the manifest (or the existing one when the same import is already there).
    """
    if fmt not in FORMATS:
        raise DataError(fmt, f"unknown import format; choose one of {sorted(FORMATS)}")
    t0 = time.monotonic()
    src = _Source(src_url, storage_options)
    rng = np.random.default_rng(seed)
    # OpenEA's own URI layout when there is no id-converted ent_ids_1 beside it
    uri_layout = fmt == "openea" and not src.has("ent_ids_1") and src.has("rel_triples_1")
    graphs = _read_uri_graphs(src) if uri_layout else _read_id_graphs(src)
    maps = {side: _IdMap(graphs[side].raw, rng) for side in SIDES}

    tables: dict[str, list[pa.Table]] = {"entities": [], "relations": [], "triples": [],
                                         "attributes": []}
    names = (_read_names(names_url, maps, storage_options, src.digests) if names_url
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
            ent_name[new_id] = given if given and given.strip() else _uri_name(uri)
        tables["entities"].append(pa.table({
            "side": [side] * n, "entity_id": np.arange(n, dtype=np.int64),
            "uri": ent_uri, "name": pa.array(ent_name, pa.string())}))

        rows, linenos, where = graph.triples, graph.triple_lines, graph.triple_file
        head = _map_or_fail(idmap, rows[:, 0], linenos, where, f"{side} entity (head)")
        tail = _map_or_fail(idmap, rows[:, 2], linenos, where, f"{side} entity (tail)")
        raw_rel = np.unique(rows[:, 1])
        rel_uris = graph.rel_uris
        if rel_uris:
            missing = [r for r in raw_rel.tolist() if r not in rel_uris]
            if missing:
                i = int(np.flatnonzero(rows[:, 1] == missing[0])[0])
                raise DataError(where, f"relation id {missing[0]} is not in rel_ids",
                                line=int(linenos[i]))
        rel_map = _IdMap(raw_rel, rng)
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
            tables["attributes"].append(_read_attributes(src, aname, side, idmap, graph.uris,
                                                         with_values=uri_layout))

    layout = FORMATS[fmt]
    candidates = OPENEA_LINKS if uri_layout else layout.gold
    gold_names = [g for g in candidates if src.has(g)]
    if not (uri_layout or layout.all_gold):
        gold_names = gold_names[:1]  # the first found, in order of preference
    gold = None
    if gold_names:
        pairs = [_read_links(src, g, maps, graphs) for g in gold_names]
        # train / valid / test splits (and all links beside them): their union, each pair once
        pairs = np.unique(np.concatenate(pairs), axis=0) if len(pairs) > 1 else pairs[0]
        gold = pa.table({"left_id": pairs[:, 0], "right_id": pairs[:, 1]})

    if fmt == "mmkb" and image_features_url is None:
        pkl = MMKB_IMAGES.format(folder=src.url.rstrip("/").rsplit("/", 1)[-1])
        if src.has(pkl):
            image_features_url = src.where(pkl)
    images = (_read_image_features(image_features_url, maps, storage_options, src.digests)
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
