"""Seed sampling: greedy one-to-one over top-k candidates, globally or per cluster.

* :func:`greedy_seeds` - UVP (EVA's unsupervised visual pivoting, PSQE appendix A.1): rank all
  left x right pairs by similarity and accept pairs whose entities are both unused until
  ``budget`` pairs.  With one modality it is the paper's Type I, with fused features Type II.
  Exact all-pairs ranking is replaced by the union of per-row top-k candidates in both
  directions (a pair that is nobody's top-k is never reached before the budget runs out at
  the budgets used here; see the oracle test).
* :func:`cluster_budgets` and :func:`sample_cluster` - PSQE Stage I (section 4.1.2): K-means over
  the fused vectors of both graphs, a budget per cluster proportional to its share of entities,
  greedy one-to-one inside each cluster.
"""

from __future__ import annotations

import math

import numpy as np

from psqe_ray.core.matching import candidates_from_topk, greedy_one_to_one
from psqe_ray.core.score_histogram import score_counts
from psqe_ray.core.search import Searcher


def candidate_edges(left: np.ndarray, right: np.ndarray, k: int, *,
                    left_ids: np.ndarray | None = None,
                    right_ids: np.ndarray | None = None, searcher: Searcher | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of per-left top-k and per-right top-k pairs (deduplicated).

    left (n, d), right (m, d) float32 (normalised: scores are cosines); ``left_ids`` /
    ``right_ids`` map rows to entity ids (default: row numbers); ``searcher`` searches both
    ways (default: exact up to 50,000 rows, IVF above; one pass when both sides are exact).
    Returns int64 (E,) left ids, int64 (E,) right ids, float32 (E,) scores, sorted by (left,
    right).
    """
    lid = np.arange(len(left), dtype=np.int64) if left_ids is None else left_ids
    rid = np.arange(len(right), dtype=np.int64) if right_ids is None else right_ids
    if len(left) == 0 or len(right) == 0 or k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    searcher = searcher or Searcher()
    l, r, s = candidates_union(*searcher.topk_both(left, right, k), len(right))
    return lid[l], rid[r], s


def candidates_union(left_to_right, right_to_left, n_right: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of two top-k results (rows: left -> right, and right -> left) as deduplicated
    (left row, right row, score) edges sorted by (left, right).  The top-k may come from one
    search or from shards merged with :func:`psqe_ray.core.topk.merge_topk`."""
    l1, r1, v1 = candidates_from_topk(*left_to_right)
    r2, l2, v2 = candidates_from_topk(*right_to_left)
    lrow = np.concatenate([l1, l2])
    rrow = np.concatenate([r1, r2])
    score = np.concatenate([v1, v2])
    key = lrow * np.int64(n_right) + rrow
    _, first = np.unique(key, return_index=True)
    return lrow[first], rrow[first], score[first].astype(np.float32)


def greedy_seeds(left: np.ndarray, right: np.ndarray, budget: int, *, k: int = 10,
                 taken_left: np.ndarray | None = None, taken_right: np.ndarray | None = None,
                 searcher: Searcher | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy one-to-one seeds over all of ``left`` x ``right``: (left ids, right ids, scores)."""
    cl, cr, cs = candidate_edges(left, right, k, searcher=searcher)
    acc = greedy_one_to_one(cl, cr, cs, limit=budget, taken_left=taken_left,
                            taken_right=taken_right)
    return cl[acc], cr[acc], cs[acc]


def n_clusters(n_total: int, clusters: int, max_cluster_size: int) -> int:
    """K = max(configured K, ceil(N / max_cluster_size)), at most N: clusters stay bounded."""
    return max(1, min(n_total, max(clusters, math.ceil(n_total / max(1, max_cluster_size)))))


def cluster_budgets(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` over clusters proportionally to ``sizes`` (largest remainder, exact sum).

    Ties in the remainder go to the smaller cluster id, so the split is deterministic.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.sum() == 0:
        return np.zeros(len(sizes), np.int64)
    quota = budget * sizes / sizes.sum()
    base = np.floor(quota).astype(np.int64)
    rest = budget - int(base.sum())
    order = np.lexsort((np.arange(len(sizes)), -(quota - base)))
    base[order[:rest]] += 1
    return base


def sample_cluster(left: np.ndarray, right: np.ndarray, left_ids: np.ndarray,
                   right_ids: np.ndarray, budget: int, k: int = 10,
                   searcher: Searcher | None = None,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy one-to-one inside one cluster: up to ``budget`` (left id, right id, score).

    left (n_c, d) / right (m_c, d) float32 similarity vectors of the cluster's entities;
    ``left_ids`` / ``right_ids`` their entity ids.  One call is one Ray task in the
    distributed path.
    """
    return sample_cluster_counted(left, right, left_ids, right_ids, budget, k, searcher)[:3]


def sample_cluster_counted(left: np.ndarray, right: np.ndarray, left_ids: np.ndarray,
                           right_ids: np.ndarray, budget: int, k: int = 10,
                           searcher: Searcher | None = None,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sample_cluster` and the score counts of the candidates its greedy rejected
    (int64 (BINS,) on the grid of :mod:`psqe_ray.core.score_histogram`; for the report)."""
    if budget <= 0 or len(left) == 0 or len(right) == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                score_counts(np.zeros(0, np.float32)))
    cl, cr, cs = candidate_edges(left, right, k, left_ids=left_ids, right_ids=right_ids,
                                 searcher=searcher)
    acc = greedy_one_to_one(cl, cr, cs, limit=budget)
    rejected = np.ones(len(cs), bool)
    rejected[acc] = False
    return cl[acc], cr[acc], cs[acc], score_counts(cs[rejected])
