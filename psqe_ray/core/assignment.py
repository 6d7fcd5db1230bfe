"""The final one-to-one alignment: an assignment solved on the sparse candidate graph.

The aligner ranks candidates per entity; a user integrating two KGs needs *the* pairs, each
entity used once, and no pair for an entity without a partner.  The unsupervised state of the
art gets much of its accuracy from solving that assignment globally (SEU, UDCEA); here it is
solved on the union of the search layer's top-k lists in both directions, never on an N x M
matrix, so it scales with the search (issue 7's layer: exact or IVF, in-process or on shards).

Scores are CSLS-adjusted (``csls(l, r) = 2 s(l, r) - r_L(l) - r_R(r)``, with ``r_L(l)`` the mean
of l's ``csls_k`` best scores from its own list and ``r_R(r)`` likewise from r's list).  Then
``iterations`` rounds of Sinkhorn balancing on the candidate edges, in the log domain::

    P(l, r) ~ exp(csls(l, r) / temperature), alternately normalised over rows and columns

Both CSLS penalties are a per-row and a per-column factor of ``exp(.)``, which Sinkhorn's own
row / column scalings absorb: on the same edges, CSLS-adjusted Sinkhorn at temperature ``t``
converges to what plain-cosine Sinkhorn at ``t / 2`` converges to (the penalties only give
the first rounds a better start).  The default ``t = 0.04`` (0.02 on the cosine scale)
and 10 rounds are the settings of the field's Sinkhorn matchers (SEU, LightEA), fixed before
any figure was looked at.

The matching is the greedy one-to-one walk over the balanced scores (best first, ties to the
smaller ids: :func:`psqe_ray.core.matching.greedy_one_to_one`), and a matched pair is kept when
its balanced score is at least ``min_share`` (default 0.5): more than half of the mass the
balancing gives that left entity's row and that right entity's column lies on this one pair,
i.e. the pair wins against all its rivals together.  An entity whose mass stays spread (no
clear partner: a dangling entity) is left out.  No threshold is read from gold links.

``method="greedy"`` is the fallback without balancing: greedy one-to-one on the CSLS scores,
keeping only pairs that are each other's best (mutual nearest on CSLS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psqe_ray.core.matching import greedy_one_to_one

__all__ = ["CandidateGraph", "MatchResult", "assign", "balanced_ranking", "candidate_graph",
           "csls_ranking", "match", "match_metrics", "judge_pairs", "pair_metrics", "sinkhorn",
           "rerank_metrics"]


@dataclass
class CandidateGraph:
    """Candidate edges of the assignment: the union of both directions' top-k lists.

    left, right: (E,) int64 ids, unique pairs sorted by (left, right); score: (E,) float64 raw
    similarity; csls: (E,) float64 CSLS-adjusted score.  n_left / n_right: entity counts."""

    left: np.ndarray
    right: np.ndarray
    score: np.ndarray
    csls: np.ndarray
    n_left: int
    n_right: int


@dataclass
class MatchResult:
    """The one-to-one alignment: matched pairs, their balanced score (``share``: Sinkhorn mass;
    for ``greedy`` the CSLS score) and their raw similarity, best first."""

    left: np.ndarray
    right: np.ndarray
    share: np.ndarray
    similarity: np.ndarray
    method: str
    candidates: int           # candidate edges the assignment was solved on
    dropped: int              # greedy matches judged dangling and left out
    edge_share: np.ndarray    # (E,) the balanced score of every candidate edge


def _penalty(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """float64 (n,): mean of each row's ``k`` best listed scores (0 for an empty row)."""
    if k <= 0 or scores.shape[1] == 0:
        return np.zeros(scores.shape[0])
    s = np.where(ids[:, :k] >= 0, scores[:, :k].astype(np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        out = np.nanmean(s, axis=1) if s.size else np.zeros(len(s))
    return np.nan_to_num(out, nan=0.0)


def candidate_graph(lr: tuple[np.ndarray, np.ndarray], rl: tuple[np.ndarray, np.ndarray],
                    csls_k: int = 3) -> CandidateGraph:
    """The candidate graph from ``lr`` = (scores, ids) of every left entity's best right
    entities and ``rl`` = the same for every right entity (rows sorted best first, id -1 for
    padding).  A pair listed in both directions keeps the larger score (the two searches may
    round one inner product differently)."""
    (ls, li), (rs, ri) = lr, rl
    ls, li, rs, ri = (np.asarray(a) for a in (ls, li, rs, ri))
    if ls.ndim != 2 or ls.shape != li.shape or rs.ndim != 2 or rs.shape != ri.shape:
        raise ValueError("lr and rl must be (scores, ids) pairs of 2-D arrays of one shape")
    n_left, n_right = ls.shape[0], rs.shape[0]
    a, b = np.nonzero(li >= 0)
    c, d = np.nonzero(ri >= 0)
    left = np.concatenate([a, ri[c, d]]).astype(np.int64)
    right = np.concatenate([li[a, b], c]).astype(np.int64)
    score = np.concatenate([ls[a, b], rs[c, d]]).astype(np.float64)
    if left.size and (left.max() >= n_left or right.max() >= n_right):
        raise ValueError("a listed id is outside the other side's rows")
    key = left * max(n_right, 1) + right
    order = np.lexsort((-score, key))          # per pair, the larger score first
    key, left, right, score = key[order], left[order], right[order], score[order]
    first = np.ones(key.size, bool)
    first[1:] = key[1:] != key[:-1]
    left, right, score = left[first], right[first], score[first]
    csls = 2.0 * score - _penalty(ls, li, csls_k)[left] - _penalty(rs, ri, csls_k)[right]
    return CandidateGraph(left, right, score, csls, n_left, n_right)


def csls_ranking(lr: tuple[np.ndarray, np.ndarray], rl: tuple[np.ndarray, np.ndarray], k: int,
                 csls_k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every left entity's ``k`` best right entities by CSLS (alignment.parquet's ranking):
    (CSLS float32 (n, k), ids int64 (n, k), raw similarity float32 (n, k)); -1 / -inf pad a
    short list.

    ``lr`` / ``rl`` as for :func:`candidate_graph`.  Each left entity's listed candidates
    (its shortlist: every candidate when the list is as long as the other side) are rescored
    by ``2 s(l, r) - r_L(l) - r_R(r)`` with both penalties from the same lists, and sorted
    best first (ties to the smaller id).  A right entity outside the shortlist is not
    ranked: with the default 50-deep lists that is the approximate evaluation's rule too
    (:mod:`psqe_ray.core.alignment_quality`)."""
    (ls, li), (rs, ri) = ((np.asarray(s), np.asarray(i)) for s, i in (lr, rl))
    if ls.ndim != 2 or ls.shape != li.shape or rs.ndim != 2 or rs.shape != ri.shape:
        raise ValueError("lr and rl must be (scores, ids) pairs of 2-D arrays of one shape")
    listed = li >= 0
    if listed.any() and int(li.max()) >= rs.shape[0]:
        raise ValueError("a listed id is outside the other side's rows")
    pen_r = _penalty(rs, ri, csls_k)
    csls = np.where(listed, 2.0 * ls.astype(np.float64) - _penalty(ls, li, csls_k)[:, None]
                    - pen_r[np.maximum(li, 0)], -np.inf)
    # best first, ties to the smaller id; padding (-inf) last
    order = np.lexsort((np.where(listed, li, np.iinfo(np.int64).max), -csls), axis=1)[:, :k]
    ids = np.take_along_axis(li, order, axis=1).astype(np.int64)
    return (np.take_along_axis(csls, order, axis=1).astype(np.float32), ids,
            np.where(ids >= 0, np.take_along_axis(ls, order, axis=1), -np.inf).astype(np.float32))


def balanced_ranking(g: CandidateGraph, share: np.ndarray, k: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every left entity's ``k`` best candidates of ``g`` by ``share`` (the balanced scores,
    :func:`sinkhorn`): (share float32 (n_left, k), ids int64, raw similarity float32), best
    first, ties to the smaller id; -1 / -inf pad an entity with fewer candidate edges.  Its
    Hits@k against gold links is :func:`rerank_metrics` of the same scores."""
    share = np.asarray(share, np.float64)
    out_s = np.full((g.n_left, k), -np.inf)
    out_i = np.full((g.n_left, k), -1, np.int64)
    out_c = np.full((g.n_left, k), -np.inf)
    if g.left.size and k > 0:
        order = np.lexsort((g.right, -share, g.left))
        lo = g.left[order]
        start = np.searchsorted(lo, np.arange(g.n_left))
        pos = np.arange(lo.size) - start[lo]
        keep = pos < k
        o, row, col = order[keep], lo[keep], pos[keep]
        out_s[row, col], out_i[row, col], out_c[row, col] = share[o], g.right[o], g.score[o]
    return out_s.astype(np.float32), out_i, out_c.astype(np.float32)


def sinkhorn(g: CandidateGraph, temperature: float = 0.04, iterations: int = 10) -> np.ndarray:
    """float64 (E,): the balanced scores of ``g``'s edges (module docstring).  Each round
    normalises every row, then every column, over its candidate edges; the last step is the
    columns', so each right entity with candidates holds mass 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if g.left.size == 0:
        return np.zeros(0)
    # log-domain start, shifted per row so no exp over- or underflows
    z = g.csls / temperature
    row_max = np.full(g.n_left, -np.inf)
    np.maximum.at(row_max, g.left, z)
    w = np.exp(z - row_max[g.left])
    for _ in range(max(int(iterations), 1)):
        w /= np.bincount(g.left, w, g.n_left)[g.left]
        w /= np.bincount(g.right, w, g.n_right)[g.right]
    return w


def _is_best(own: np.ndarray, other: np.ndarray, score: np.ndarray) -> np.ndarray:
    """bool (E,): edge is the best of its ``own`` entity's edges (ties: the smaller ``other``
    id, as everywhere)."""
    flag = np.zeros(own.size, bool)
    if own.size:
        order = np.lexsort((other, -score, own))
        so = own[order]
        flag[order[np.r_[True, so[1:] != so[:-1]]]] = True
    return flag


def match(g: CandidateGraph, *, method: str = "sinkhorn", temperature: float = 0.04,
          iterations: int = 10, min_share: float = 0.5) -> MatchResult:
    """The one-to-one alignment on ``g`` (module docstring)."""
    if method == "sinkhorn":
        share = sinkhorn(g, temperature, iterations)
        pick = greedy_one_to_one(g.left, g.right, share.astype(np.float32))
        keep = share[pick] >= min_share
    elif method == "greedy":
        share = g.csls
        pick = greedy_one_to_one(g.left, g.right, share.astype(np.float32))
        mutual = _is_best(g.left, g.right, g.csls) & _is_best(g.right, g.left, g.csls)
        keep = mutual[pick]
    else:
        raise ValueError(f"matching method must be sinkhorn or greedy, got {method!r}")
    kept = pick[keep]
    return MatchResult(g.left[kept], g.right[kept], share[kept], g.score[kept], method,
                       int(g.left.size), int((~keep).sum()), share)


def assign(lr: tuple[np.ndarray, np.ndarray], rl: tuple[np.ndarray, np.ndarray],
           a) -> tuple[CandidateGraph, MatchResult]:
    """The candidate graph of the top-k lists ``lr`` / ``rl`` (cut to ``a.match_k``) and its
    one-to-one matching, with the ``align`` settings ``a`` (an ``AlignConfig``; matching
    ``off`` balances with Sinkhorn, for callers that need the matches anyway)."""
    k = a.match_k
    g = candidate_graph((lr[0][:, :k], lr[1][:, :k]), (rl[0][:, :k], rl[1][:, :k]), a.csls_k)
    return g, match(g, method="greedy" if a.matching == "greedy" else "sinkhorn",
                    temperature=a.match_temperature, iterations=a.match_iterations,
                    min_share=a.match_min_share)


def match_metrics(m: MatchResult, gold_left: np.ndarray, gold_right: np.ndarray) -> dict:
    """:func:`pair_metrics` of the matched pairs."""
    return pair_metrics(m.left, m.right, gold_left, gold_right)


def judge_pairs(left: np.ndarray, right: np.ndarray, gold_left: np.ndarray,
                gold_right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pair ``left[i] -> right[i]`` against the gold links (evaluation only): (correct
    bool (P,), judged bool (P,): the pair touches an entity of a gold pair, partner int64: the
    gold right partner of every left id up to the largest seen, -1 for none)."""
    gl, gr = np.asarray(gold_left, np.int64), np.asarray(gold_right, np.int64)
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    n_l = int(max(gl.max(initial=-1), left.max(initial=-1))) + 1
    n_r = int(max(gr.max(initial=-1), right.max(initial=-1))) + 1
    partner = np.full(n_l, -1, np.int64)
    partner[gl] = gr
    listed_r = np.zeros(n_r, bool)
    listed_r[gr] = True
    correct = partner[left] == right
    return correct, (partner[left] >= 0) | listed_r[right], partner


def pair_metrics(left: np.ndarray, right: np.ndarray, gold_left: np.ndarray,
                 gold_right: np.ndarray) -> dict:
    """Precision / recall / F1 of entity pairs (the matches) against gold links (evaluation
    only).

    ``recall`` = correct matches / gold pairs (for a one-to-one alignment this is also its
    Hits@1 over the gold left entities).  ``precision`` = correct / *judged* matches, those
    touching an entity of a gold pair; a match between two entities that no gold pair
    mentions cannot be judged (benchmark gold lists are partial) and is counted as
    ``unjudged``, and ``precision_all`` counts it as wrong."""
    gl = np.asarray(gold_left, np.int64)
    left = np.asarray(left, np.int64)
    ok, seen, _ = judge_pairs(left, right, gl, gold_right)
    correct, judged = int(ok.sum()), int(seen.sum())
    p = correct / judged if judged else None
    r = correct / len(gl) if len(gl) else None
    f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return {"matches": int(left.size), "correct": correct, "judged": judged,
            "unjudged": int(left.size) - judged, "precision": p, "recall": r, "f1": f1,
            "precision_all": correct / left.size if left.size else None}


def rerank_metrics(g: CandidateGraph, share: np.ndarray, gold_left: np.ndarray,
                   gold_right: np.ndarray, hits: tuple[int, ...] = (1, 10)) -> dict:
    """Hits@k / MRR of the gold partners when each left entity's candidates are ranked by
    ``share`` (ties to the smaller id), left to right over all gold pairs; a partner that is
    not among the entity's candidates counts as a miss (reciprocal rank 0)."""
    gl = np.asarray(gold_left, np.int64)
    gr = np.asarray(gold_right, np.int64)
    if gl.size == 0:
        return {**{f"hits@{k}": None for k in hits}, "mrr": None, "pairs": 0}
    partner = np.full(g.n_left, -1, np.int64)
    partner[gl] = gr
    is_gold = partner[g.left] == g.right
    gold_share = np.full(g.n_left, np.nan)
    gold_share[g.left[is_gold]] = share[is_gold]
    t = gold_share[g.left]
    tr = partner[g.left]
    better = ~np.isnan(t) & ((share > t) | ((share == t) & (g.right < tr)))
    rank = 1 + np.bincount(g.left, better, g.n_left)[gl].astype(np.int64)
    found = ~np.isnan(gold_share[gl])
    recip = np.where(found, 1.0 / rank, 0.0)
    return {**{f"hits@{k}": float((found & (rank <= k)).mean()) for k in hits},
            "mrr": float(recip.mean()), "pairs": int(gl.size),
            "listed": float(found.mean())}
