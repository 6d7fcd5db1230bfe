"""The one home of entity-id checks: 1-D integer ids, in range, once each.

Every reader of ids goes through these: the dataset contract (:mod:`psqe_ray.validation`, which
wraps the findings in a :class:`~psqe_ray.errors.DataError` naming the table and column), the
seed files the aligner reads (:func:`psqe_ray.runners.align.read_seeds`), and the pure functions of
``core`` (seed quality, matching), which raise ``ValueError`` / ``TypeError`` on a caller's
mistake.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def as_ids(name: str, a: np.ndarray | Sequence[int], n: int | None = None) -> np.ndarray:
    """``a`` as a 1-D int64 array; ids must be non-negative and, when ``n`` is given, below it.

    Raises ``ValueError`` (shape, range) or ``TypeError`` (not integers) naming ``name``.
    """
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{name} holds a negative id ({lo})")
    if n is not None and hi >= n:
        raise ValueError(f"{name} holds id {hi}, out of range for {n} entities")
    return arr


def out_of_range(ids: np.ndarray, n: int) -> tuple[int, int] | None:
    """``(first offending id, how many)`` for ids outside ``0 .. n-1``, or ``None``."""
    if len(ids) == 0:
        return None
    bad = (ids < 0) | (ids >= n)
    if not bad.any():
        return None
    return int(ids[np.flatnonzero(bad)[0]]), int(bad.sum())


def duplicates(ids: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
    """The distinct ids that occur more than once in ``ids`` (sorted), or, when there are none,
    those already marked in the bool mask ``seen`` (ids known from earlier parts)."""
    uniq, counts = np.unique(ids, return_counts=True)
    dup = uniq[counts > 1]
    if len(dup) == 0 and seen is not None:
        inside = uniq[uniq < len(seen)]
        dup = inside[seen[inside]]
    return dup
