"""Reading a source folder's text files: fields, integers, raw ids and their dense re-mapping.

Every problem is a :class:`DataError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from psqe_ray.errors import DataError
from psqe_ray.io.fs import StorageOptions, exists, join, read_bytes, resolve


@dataclass
class Source:
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


def split_fields(line: str, where: str, lineno: int, n: int | None, what: str) -> list[str]:
    parts = line.rstrip("\r").split("\t")
    if (n is not None and len(parts) != n) or (n is None and len(parts) < 1):
        raise DataError(where, f"malformed line: expected {n} tab-separated fields ({what}), "
                        f"got {len(parts)}: {line[:80]!r}", line=lineno)
    return parts


INT64 = (-(2**63), 2**63 - 1)


def to_int(text: str, where: str, lineno: int | None, what: str) -> int:
    prefix = "malformed line: " if lineno is not None else ""
    try:
        if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
            raise ValueError(text)
        value = int(text)
    except (ValueError, TypeError, OverflowError):
        raise DataError(where, f"{prefix}{what} {str(text)[:40]!r} is not an integer",
                        line=lineno) from None
    if not INT64[0] <= value <= INT64[1]:
        raise DataError(where, f"{what} {str(text)[:40]} does not fit in 64 bits", line=lineno)
    return value


class IdMap:
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


def read_entities(src: Source, name: str) -> tuple[np.ndarray, list[str], list[int]]:
    where = src.where(name)
    ids: list[int] = []
    uris: list[str] = []
    seen: dict[int, int] = {}
    linenos: list[int] = []
    for lineno, line in enumerate(src.lines(name), 1):
        if not line.strip():
            continue
        raw_id, uri = split_fields(line, where, lineno, 2, "id, URI")
        eid = to_int(raw_id, where, lineno, "entity id")
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


def read_id_rows(src: Source, name: str, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse lines of ``n`` integer fields; return (rows x n array, line numbers)."""
    where = src.where(name)
    rows: list[list[int]] = []
    linenos: list[int] = []
    for lineno, line in enumerate(src.lines(name), 1):
        if not line.strip():
            continue
        parts = split_fields(line, where, lineno, n, what)
        rows.append([to_int(p, where, lineno, "id") for p in parts])
        linenos.append(lineno)
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, n)
    return arr, np.asarray(linenos, dtype=np.int64)


def map_or_fail(idmap: IdMap, raw: np.ndarray, linenos: np.ndarray, where: str,
                 what: str) -> np.ndarray:
    new, known = idmap.lookup(raw)
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise DataError(where, f"unknown {what} {int(raw[i])} ({int((~known).sum())} such "
                        "reference(s))", line=int(linenos[i]))
    return new
