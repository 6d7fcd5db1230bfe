"""The graphs of a source folder: entities, triples (id or URI layout), attributes, gold links."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from psqe_ray.errors import DataError
from psqe_ray.io.importers.text import (IdMap, Source, map_or_fail, read_entities, read_id_rows,
                                        split_fields, to_int)
from psqe_ray.schemas import SIDES, local_name


FREEBASE_MID = re.compile(r"^(?:/[mg]/|https?://rdf\.freebase\.com/ns/[mg]\.)[0-9a-z_]+$")


def uri_name(uri: str) -> str | None:
    """An entity's name from its URI (N-Triples ``<...>`` dropped), or none for an opaque id.

    A Freebase mid (``/m/027rn``, MMKB's FB15K side) names nothing: it has no name.
    """
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1]
    if FREEBASE_MID.match(uri):
        return None
    return local_name(uri) or None


@dataclass
class Graph:
    """One side as read from the source, before the id permutation (raw ids in file order)."""

    raw: np.ndarray  # raw entity ids
    uris: list[str]
    lines: list[int]  # line of each entity in its file (the id layouts' ent_ids_k)
    triples: np.ndarray  # (n, 3) raw head, relation, tail
    triple_lines: np.ndarray
    triple_file: str
    rel_uris: dict[int, str]  # raw relation id -> URI; empty: relations unnamed
    codes: dict[str, int] | None = None  # URI -> raw id (OpenEA's URI layout: links name URIs)


def read_id_graphs(src: Source) -> dict[str, Graph]:
    """The id layouts (DBP15K, id-converted OpenEA, MMKB, DWY100K): ent_ids_k, triples_k, rel_ids."""
    ents = {side: read_entities(src, f"ent_ids_{k}") for k, side in enumerate(SIDES, 1)}
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
                    rid, ruri = split_fields(line, where, lineno, 2, "id, relation URI")
                    rel_uris[to_int(rid, where, lineno, "relation id")] = ruri.strip()
    graphs = {}
    for k, side in enumerate(SIDES, 1):
        rows, lines = read_id_rows(src, f"triples_{k}", 3, "head, relation, tail")
        graphs[side] = Graph(*ents[side], rows, lines, src.where(f"triples_{k}"), rel_uris)
    return graphs


def read_uri_graphs(src: Source) -> dict[str, Graph]:
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
            fields = split_fields(line, where, lineno, 3, "head, relation, tail")
            h, r, t = (p.strip() for p in fields)
            if not (h and r and t):
                raise DataError(where, "malformed line: an empty URI", line=lineno)
            rows.append((ents.setdefault(h, len(ents)), rels.setdefault(r, len(rels)),
                         ents.setdefault(t, len(ents))))
            lines.append(lineno)
        if not ents:
            raise DataError(where, "empty graph: the file lists no relation triples")
        graphs[side] = Graph(np.arange(len(ents), dtype=np.int64), list(ents), [],
                              np.asarray(rows, np.int64), np.asarray(lines, np.int64), where,
                              {i: u for u, i in rels.items()}, codes=ents)
    return graphs


def read_attributes(src: Source, name: str, side: str, idmap: IdMap, uris: list[str],
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


def read_links(src: Source, name: str, maps: dict[str, IdMap],
                graphs: dict[str, Graph]) -> np.ndarray:
    """One gold file -> (n, 2) new (left, right) ids; raw ids, or URIs in OpenEA's own layout."""
    where = src.where(name)
    if graphs["left"].codes is None:
        rows, lines = read_id_rows(src, name, 2, "left id, right id")
    else:
        pairs: list[list[int]] = []
        linelist: list[int] = []
        for lineno, line in enumerate(src.lines(name), 1):
            if not line.strip():
                continue
            uris = [p.strip() for p in split_fields(line, where, lineno, 2, "left URI, right URI")]
            for side, uri in zip(SIDES, uris):
                if uri not in graphs[side].codes:
                    raise DataError(where, f"unknown {side} entity {uri[:80]!r}", line=lineno)
            pairs.append([graphs[s].codes[u] for s, u in zip(SIDES, uris)])
            linelist.append(lineno)
        rows = np.asarray(pairs, np.int64).reshape(-1, 2)
        lines = np.asarray(linelist, np.int64)
    return np.stack([map_or_fail(maps[s], rows[:, i], lines, where, f"{s} entity")
                     for i, s in enumerate(SIDES)], axis=1)
