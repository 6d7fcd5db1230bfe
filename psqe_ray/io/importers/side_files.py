"""Files beside the graphs: the names JSON and the image-feature pickles."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pyarrow as pa

from psqe_ray.errors import DataError
from psqe_ray.io.fs import StorageOptions, read_bytes, resolve
from psqe_ray.io.importers.text import IdMap, to_int
from psqe_ray.schemas import SIDES, feature_schema


def read_names(url: str, maps: dict[str, IdMap], storage_options: StorageOptions,
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
            ids.append(to_int(raw_id, url, None, f"entry {k}: entity id"))
        except DataError as exc:
            malformed = exc
            break
        names.append(tokens if isinstance(tokens, str) else " ".join(str(t) for t in tokens))
    # one vectorised lookup for all entries instead of two per entry
    side_of, new_ids = locate(np.asarray(ids, dtype=np.int64), maps)
    if (side_of < 0).any():
        k = int(np.flatnonzero(side_of < 0)[0])
        raise DataError(url, f"entry {k}: unknown entity id {ids[k]}")
    if malformed is not None:
        raise malformed
    out: dict[str, dict[int, str]] = {s: {} for s in SIDES}
    for side_index, new_id, name in zip(side_of.tolist(), new_ids.tolist(), names):
        out[SIDES[side_index]][new_id] = name
    return out


def locate(raw: np.ndarray, maps: dict[str, IdMap]) -> tuple[np.ndarray, np.ndarray]:
    """For raw ids of either graph: side index (0 left, 1 right, -1 unknown) and new id."""
    side_of = np.full(len(raw), -1, dtype=np.int64)
    new_ids = np.zeros(len(raw), dtype=np.int64)
    for i, side in enumerate(SIDES):
        new, known = maps[side].lookup(raw)
        take = known & (side_of < 0)
        side_of[take] = i
        new_ids[take] = new[take]
    return side_of, new_ids


def read_image_features(url: str, maps: dict[str, IdMap], storage_options: StorageOptions,
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
        raw_id = to_int(key, url, None, f"key {key!r}: entity id")
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
