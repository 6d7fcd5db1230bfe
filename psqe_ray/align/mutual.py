"""Mutual nearest neighbours between the graphs: the checks of the aligner's iterative rounds
(and of the unsupervised choice of smoothing hops).

Every neighbour question goes through the search layer (:class:`~psqe_ray.core.search.Searcher`),
exact below its threshold and approximate above it.
"""

from __future__ import annotations

import numpy as np

from psqe_ray.core.search import Searcher


def _nearest(searcher: Searcher, query: np.ndarray, base: np.ndarray, ids: np.ndarray
             ) -> np.ndarray:
    """For each query row, ``ids[j]`` of its nearest base row ``j`` (-1 when the search
    returned none).  int64 (len(query),)."""
    if len(query) == 0:
        return np.zeros(0, np.int64)
    got = searcher.topk(query, base, 1)[1][:, 0]
    return np.where(got >= 0, ids[np.maximum(got, 0)], -1)


def mutual_nearest(left: np.ndarray, right: np.ndarray, free_left: np.ndarray,
                   free_right: np.ndarray, searcher: Searcher | None = None,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (l, r) of free entities that are each other's nearest neighbour among the free
    entities of the other graph (inner products; ties to the smaller id), found by the search
    layer (``searcher``; approximate above its exact threshold).  int64 (P,) each.

    Both ways come from one search (:meth:`Searcher.topk_both`: one pass over the score tiles
    when the search is exact; each query's answer does not depend on the others asked)."""
    fl, fr = np.flatnonzero(free_left), np.flatnonzero(free_right)
    if len(fl) == 0 or len(fr) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    searcher = searcher or Searcher()
    lr, rl = searcher.topk_both(left[fl], right[fr], 1)
    l2r = np.where(lr[1][:, 0] >= 0, fr[np.maximum(lr[1][:, 0], 0)], -1)
    back = np.full(len(free_right), -1, np.int64)
    back[fr] = np.where(rl[1][:, 0] >= 0, fl[np.maximum(rl[1][:, 0], 0)], -1)
    keep = (l2r >= 0) & (back[np.maximum(l2r, 0)] == fl)
    return fl[keep], l2r[keep]


def still_mutual(left: np.ndarray, right: np.ndarray, free_left: np.ndarray,
                 free_right: np.ndarray, pair_left: np.ndarray, pair_right: np.ndarray,
                 searcher: Searcher | None = None) -> np.ndarray:
    """bool (P,): which of the pairs are also mutual nearest neighbours among the free
    entities under these vectors, i.e. ``(l, r) in mutual_nearest(left, right, ...)``, with
    only the pairs' own entities searched (PCMEA's calibration asks this of the momentum
    encoder for the online encoder's pairs)."""
    fl, fr = np.flatnonzero(free_left), np.flatnonzero(free_right)
    if len(pair_left) == 0:
        return np.zeros(0, bool)
    searcher = searcher or Searcher()
    return (_nearest(searcher, left[pair_left], right[fr], fr) == pair_right) & \
        (_nearest(searcher, right[pair_right], left[fl], fl) == pair_left)
