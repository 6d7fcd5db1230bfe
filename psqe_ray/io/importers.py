"""Importers for the layouts used by EVA / MCLEA / MEAformer (DBP15K) and OpenEA.

Source folder (any fsspec URL), each optional part used when present:

==========================  =================================================================
``ent_ids_1``/``ent_ids_2``  ``raw_id<TAB>URI`` per entity (left / right); required
``triples_1``/``triples_2``  ``head<TAB>relation<TAB>tail`` (raw ids); required (may be empty)
``ill_ent_ids``              ``left<TAB>right`` gold links (DBP15K name; OpenEA: ``ref_ent_ids``)
``rel_ids``                  ``raw_relation_id<TAB>relation URI`` (both sides, optional)
``training_attrs_1/2``       ``entity URI<TAB>attribute<TAB>attribute...`` (names only, optional)
names JSON (``--names``)     ``[[raw_id, [token, ...]], ...]``, e.g. DBP15K translated names
image pickle                 ``{raw_id: vector}``, e.g. EVA's ResNet features
==========================  =================================================================

Raw ids are re-mapped to dense per-side ids by a seeded permutation, so that no id carries
alignment signal (in DBP15K gold pairs are ``(i, i + 10500)``).  Every problem is reported as a
:class:`DataError` naming the file, the line and the problem; nothing is written unless the
whole import validates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
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

FORMATS = {
    # format -> gold file names, in order of preference
    "dbp15k": ("ill_ent_ids", "ref_ent_ids"),
    "openea": ("ref_ent_ids", "ill_ent_ids"),
}


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


def import_pair(fmt: str, src_url: str, dataset_url: str, *, names_url: str | None = None,
                image_features_url: str | None = None, seed: int = 0,
                storage_options: StorageOptions = None) -> dict:
    """Import a DBP15K- or OpenEA-layout folder into a psqe-ray dataset at ``dataset_url``.

    Returns the manifest (or the existing one when the same import is already there).
    """
    if fmt not in FORMATS:
        raise DataError(fmt, f"unknown import format; choose one of {sorted(FORMATS)}")
    t0 = time.monotonic()
    src = _Source(src_url, storage_options)
    rng = np.random.default_rng(seed)
    maps: dict[str, _IdMap] = {}
    uris: dict[str, list[str]] = {}
    linenos: dict[str, list[int]] = {}
    for k, side in enumerate(SIDES, 1):
        raw, uris[side], linenos[side] = _read_entities(src, f"ent_ids_{k}")
        maps[side] = _IdMap(raw, rng)
    overlap = np.isin(maps["right"].raw, maps["left"].raw)
    if overlap.any():
        i = int(np.flatnonzero(overlap)[0])
        raise DataError(src.where("ent_ids_2"), f"raw entity id {int(maps['right'].raw[i])} "
                        f"also appears in ent_ids_1 ({int(overlap.sum())} shared ids); the "
                        "layout needs one id space for both graphs", line=linenos["right"][i])

    rel_uris: dict[int, str] = {}
    if src.has("rel_ids"):
        where = src.where("rel_ids")
        for lineno, line in enumerate(src.lines("rel_ids"), 1):
            if not line.strip():
                continue
            rid, ruri = _fields(line, where, lineno, 2, "id, relation URI")
            rel_uris[_int(rid, where, lineno, "relation id")] = ruri.strip()

    tables: dict[str, list[pa.Table]] = {"entities": [], "relations": [], "triples": [],
                                         "attributes": []}
    names = (_read_names(names_url, maps, storage_options, src.digests) if names_url
             else {s: {} for s in SIDES})
    triple_notes: dict[str, dict[str, int]] = {}
    for k, side in enumerate(SIDES, 1):
        idmap = maps[side]
        n = len(idmap)
        ent_uri = [""] * n
        ent_name: list[str | None] = [None] * n
        for new_id, uri in zip(idmap.new.tolist(), uris[side]):
            ent_uri[new_id] = uri
            # an empty (or blank) name is no name: the URI's, else null (absent)
            given = names[side].get(new_id)
            ent_name[new_id] = (given if given and given.strip() else local_name(uri)) or None
        tables["entities"].append(pa.table({
            "side": [side] * n, "entity_id": np.arange(n, dtype=np.int64),
            "uri": ent_uri, "name": pa.array(ent_name, pa.string())}))

        tname = f"triples_{k}"
        where = src.where(tname)
        rows, linenos = _read_id_rows(src, tname, 3, "head, relation, tail")
        head = _map_or_fail(idmap, rows[:, 0], linenos, where, f"{side} entity (head)")
        tail = _map_or_fail(idmap, rows[:, 2], linenos, where, f"{side} entity (tail)")
        raw_rel = np.unique(rows[:, 1])
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

        aname = f"training_attrs_{k}"
        if src.has(aname):
            where = src.where(aname)
            by_uri = {u: i for i, u in zip(idmap.new.tolist(), uris[side])}
            a_ent: list[int] = []
            a_attr: list[str] = []
            for lineno, line in enumerate(src.lines(aname), 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r").split("\t")
                if len(parts) < 2:
                    raise DataError(where, "malformed line: expected an entity URI and at least "
                                    "one attribute", line=lineno)
                eid = by_uri.get(parts[0].strip())
                if eid is None:
                    raise DataError(where, f"unknown {side} entity {parts[0][:80]!r}", line=lineno)
                for attr in parts[1:]:
                    if attr.strip():
                        a_ent.append(eid)
                        a_attr.append(attr.strip())
            tables["attributes"].append(pa.table({
                "side": pa.array([side] * len(a_ent), pa.string()),
                "entity_id": np.asarray(a_ent, dtype=np.int64),
                "attribute": pa.array(a_attr, pa.string()),
                "value": pa.array([None] * len(a_ent), pa.string())}))

    gold = None
    gold_name = next((g for g in FORMATS[fmt] if src.has(g)), None)
    if gold_name:
        rows, linenos = _read_id_rows(src, gold_name, 2, "left id, right id")
        where = src.where(gold_name)
        left = _map_or_fail(maps["left"], rows[:, 0], linenos, where, "left entity")
        right = _map_or_fail(maps["right"], rows[:, 1], linenos, where, "right entity")
        gold = pa.table({"left_id": left, "right_id": right})

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
            "image_features": image_features_url, "gold_file": gold_name,
            "triples": triple_notes,
            "import_seconds": round(time.monotonic() - t0, 3)})
    log.info("imported %s -> %s in %.1f s", src_url, dataset_url, time.monotonic() - t0)
    return manifest
