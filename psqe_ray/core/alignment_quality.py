"""Alignment quality (of the aligned vectors): Hits@k and MRR over gold pairs, with/without CSLS.

For a query entity ``q`` with gold partner ``t`` among candidates ``C`` (every entity of the
other graph), with ``s(q, c)`` the score::

    rank(q) = 1 + #{c in C : s(q, c) > s(q, t)} + #{c in C : c < t, s(q, c) == s(q, t)}

(ties go to the smaller id, as everywhere in psqe-ray), ``Hits@k`` = share of queries with
``rank <= k`` and ``MRR`` = mean of ``1 / rank``.  Scores are inner products of the given
vectors (cosines when normalised), or CSLS (Lample et al. 2018, used by EVA / MCLEA / MEAformer
evaluation code)::

    csls(q, c) = 2 s(q, c) - r_C(q) - r_Q(c)

with ``r_C(q)`` the mean of q's ``k`` best scores among the candidates and ``r_Q(c)`` the mean of
c's ``k`` best scores among the queries' graph (k = 3 in the field).  Ranks are counted in blocks
of candidates: memory is ``O(block x block)``, never ``n x m``.

Two candidate sets: ``all`` ranks each gold entity among *every* entity of the other graph
(dangling ones included: the full-alignment setting, stricter than the field's); ``test`` is the
field's protocol: the gold pairs are shuffled with a seed, the last 70 % are the test pairs
(:func:`field_split`), and each test entity is ranked among the other graph's test entities only
(CSLS neighbourhoods within the test entities too).  Nothing
here chooses anything: evaluation reads gold links and only reports.

Every neighbour question goes through the search layer (:class:`~psqe_ray.core.search.Searcher`).
While its plan for the candidate set is exact (up to ``search.exact_below`` candidates), ranks
are counted exactly over every candidate as above.  Above it, each query's ``depth`` (default
50) best candidates come from the approximate search; the partner's rank is 1 + the number of
listed candidates that beat it (CSLS: the listed candidates and the partner rescored by CSLS,
penalties from the same search).  Hits@1 / Hits@10 are then exact up to the search's recall;
a partner ranked beyond ``depth`` counts as rank ``depth + 1`` (its reciprocal rank is
over-stated by at most ``1 / (depth + 1)``).
"""

from __future__ import annotations

import numpy as np

from psqe_ray.core.search import Searcher
from psqe_ray.core.topk import _round_down_f32, canonical_scores

__all__ = ["Vectors", "alignment_metrics", "csls_penalty", "field_split", "gold_ranks"]


class Vectors:
    """How the approximate evaluation reaches the vectors: here, arrays of this process.  The
    Ray path passes one for row blocks in the object store (searches on shard tasks, subsets
    and pair scores made by tasks), so its driver never holds an N x d matrix."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher

    def topk(self, query, base, k: int):
        """(scores, ids) of every query row's ``k`` best base rows."""
        return self.searcher.topk(query, base, k)

    def subset(self, x, ids: np.ndarray):
        """The rows ``ids`` of ``x``, in that order, as a new matrix of the same kind."""
        return np.ascontiguousarray(x[ids], np.float32)

    def pair_scores(self, x, x_ids: np.ndarray, y, y_ids: np.ndarray) -> np.ndarray:
        """float32 (P,): the canonical inner product of ``x[x_ids[e]]`` and ``y[y_ids[e]]``
        (:func:`~psqe_ray.core.topk.canonical_scores`), one number per pair: the rows
        themselves never gather in one place."""
        return canonical_scores(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                np.asarray(x_ids, np.int64), np.asarray(y_ids, np.int64))


def csls_penalty(x: np.ndarray, others: np.ndarray, k: int = 3,
                 searcher: Searcher | None = None) -> np.ndarray:
    """float64 (n,): mean of each row of ``x``'s ``k`` best inner products with ``others``."""
    if k <= 0 or len(others) == 0:
        return np.zeros(len(x))
    return _penalty((searcher or Searcher()).topk(x, others, k))


def _penalty(lists) -> np.ndarray:
    """float64 (n,): the mean of each row's scores in a top-k result (scores, ids)."""
    return lists[0].astype(np.float64).mean(axis=1)


def gold_ranks(query: np.ndarray, cand: np.ndarray, q_ids: np.ndarray, t_ids: np.ndarray, *,
               csls_k: int = 0, block: int = 4096,
               searcher: Searcher | None = None) -> np.ndarray:
    """int64 (P,): rank of candidate ``t_ids[p]`` for query ``q_ids[p]`` (see module docstring).

    query (n, d), cand (m, d) float32; q_ids / t_ids int64 (P,) rows of query / cand.
    ``csls_k > 0`` ranks by CSLS with that k.  ``searcher`` (default: exact up to 50,000
    candidates) decides between exact counting and the approximate shortlist.
    """
    searcher = searcher or Searcher()
    query = np.ascontiguousarray(query, np.float32)
    cand = np.ascontiguousarray(cand, np.float32)
    q_ids = np.asarray(q_ids, np.int64)
    t_ids = np.asarray(t_ids, np.int64)
    if query.shape[1] != cand.shape[1]:
        raise ValueError(f"query has d={query.shape[1]}, candidates d={cand.shape[1]}")
    if len(q_ids) != len(t_ids):
        raise ValueError("q_ids and t_ids must have one length")
    if len(q_ids) == 0:
        return np.zeros(0, np.int64)
    if not searcher.is_exact(len(cand)):
        return _listed_ranks(query, cand, q_ids, t_ids, csls_k, searcher)
    pens = [None]
    if csls_k > 0:
        pens = [(csls_penalty(query[q_ids], cand, csls_k, searcher),
                 csls_penalty(cand, query, csls_k, searcher))]
    return _exact_ranks(query, cand, q_ids, t_ids, pens, block)[0]


def _rank_bounds(query: np.ndarray, cand: np.ndarray, q_ids: np.ndarray, t_ids: np.ndarray,
                 pens: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per scoring of :func:`_exact_ranks`: (hi, lo), the partner's score plus and minus the
    rounding bound.  Float32 tiles differ from the exact score by rounding: scores within
    this bound of the partner's count as ties (and ties go to the smaller id), so rounding
    never decides a rank."""
    qv = query[q_ids]
    base = np.einsum("ij,ij->i", qv, cand[t_ids], dtype=np.float64)
    d = query.shape[1]
    tol0 = (d + 2) * 2.0 ** -23 * np.linalg.norm(qv, axis=1) * float(
        np.linalg.norm(cand, axis=1).max(initial=0.0)) + 1e-30
    bounds = []
    for pen in pens:
        true, tol = (base, tol0) if pen is None else (2.0 * base - pen[0] - pen[1][t_ids],
                                                      4.0 * tol0)
        hi, lo = true + tol, true - tol
        if pen is None:  # the float32 tile compared with float32 bounds, the same answers:
            # for a float32 s, s > hi iff s > (largest float32 <= hi), and s >= lo iff
            # s >= (smallest float32 >= lo)
            hi, lo = _round_down_f32(hi), -_round_down_f32(-lo)
        bounds.append((hi, lo))
    return bounds


def _exact_ranks(query: np.ndarray, cand: np.ndarray, q_ids: np.ndarray, t_ids: np.ndarray,
                 pens: list, block: int = 4096) -> list[np.ndarray]:
    """Exact ranks (module docstring) under several scorings from one pass over the score
    blocks: ``pens`` holds, per scoring, None (plain inner products) or the CSLS penalties
    (r_q float64 (P,) of the query rows ``q_ids``, r_c float64 (m,) of every candidate).
    ``query`` / ``cand`` float32 contiguous; returns one int64 (P,) array per scoring."""
    qv = query[q_ids]
    bounds = _rank_bounds(query, cand, q_ids, t_ids, pens)
    ranks = [np.ones(len(q_ids), np.int64) for _ in pens]
    for a in range(0, len(q_ids), block):
        qb = qv[a:a + block]
        tb = t_ids[a:a + block]
        for c0 in range(0, len(cand), block):
            raw = qb @ cand[c0:c0 + block].T
            # the partner's own column when it lies in this block (never counted: not above
            # its own upper bound, not earlier than itself)
            own = np.flatnonzero((tb >= c0) & (tb < c0 + raw.shape[1]))
            for pen, (hi, lo), rank in zip(pens, bounds, ranks):
                if pen is None:
                    s = raw
                else:  # 2 * raw is exact in float32; the penalties make it float64
                    s = raw.astype(np.float64)
                    s *= 2.0
                    s -= pen[0][a:a + block, None]
                    s -= pen[1][None, c0:c0 + block]
                hb, lb = hi[a:a + block], lo[a:a + block]
                # better = s > hi, or lo <= s <= hi (a tie within rounding) at an earlier id.
                # Count the first everywhere, the band only on the rows that have one beside
                # the partner: ties are rare, so the tile is compared twice and nothing more
                above = np.count_nonzero(s > hb[:, None], axis=1)
                band = np.count_nonzero(s >= lb[:, None], axis=1) - above
                if len(own):
                    p = s[own, tb[own] - c0]
                    band[own] -= (p >= lb[own]) & (p <= hb[own])
                rank[a:a + block] += above
                tied = np.flatnonzero(band)
                if len(tied):
                    sub = s[tied]
                    earlier = np.arange(c0, c0 + raw.shape[1])[None, :] < tb[tied, None]
                    rank[a + tied] += np.count_nonzero(
                        (sub >= lb[tied, None]) & (sub <= hb[tied, None]) & earlier, axis=1)
    return ranks


def _listed_ranks(query: np.ndarray, cand: np.ndarray, q_ids: np.ndarray, t_ids: np.ndarray,
                  csls_k: int, searcher: Searcher, lists: tuple | None = None,
                  penalty: np.ndarray | None = None, vectors: Vectors | None = None
                  ) -> np.ndarray:
    """Ranks from each query's ``searcher.depth`` best candidates (module docstring).

    ``lists``: (scores, ids) of every query row's depth best candidates when already searched
    (rows of ``query``); ``penalty``: the candidates' CSLS penalties when already known."""
    depth = max(searcher.depth, csls_k)
    if lists is None:
        s, ids = searcher.topk(query[q_ids], cand, depth)
    else:
        s, ids = lists[0][q_ids], lists[1][q_ids]
    s = s.astype(np.float64)
    # the partner's score from the two rows alone (canonical: the same wherever computed)
    vec = vectors or Vectors(searcher)
    true = vec.pair_scores(query, q_ids, cand, t_ids).astype(np.float64)
    listed = ids >= 0
    if csls_k > 0:
        r_q = s[:, :csls_k].mean(axis=1)
        r_c = penalty if penalty is not None else csls_penalty(cand, query, csls_k, searcher)
        true = 2.0 * true - r_q - r_c[t_ids]
        s = np.where(listed, 2.0 * s - r_q[:, None] - r_c[np.maximum(ids, 0)], -np.inf)
    # canonical scores are exact functions of the two vectors: ties are real ties
    t = t_ids[:, None]
    better = listed & (ids != t) & ((s > true[:, None]) | ((s == true[:, None]) & (ids < t)))
    return 1 + better.sum(axis=1).astype(np.int64)


def _approximate_variants(left, right, gl, gr, test, csls_k, hits, searcher,
                          vectors: Vectors | None = None) -> dict:
    """Every variant from two searches per candidate set (left -> right and right -> left over
    all rows of the set, ``depth`` deep): each direction's lists and the other side's CSLS
    penalties come from them.  ``vectors`` reaches the vectors (default: arrays here)."""
    vec = vectors or Vectors(searcher)
    depth = max(searcher.depth, csls_k)
    variants = {}
    local = np.arange(len(test), dtype=np.int64)
    for name, (lv, rv, li, ri) in {"all": (left, right, gl, gr),
                                   "test": (vec.subset(left, gl[test]), vec.subset(right, gr[test]),
                                            local, local)}.items():
        lr = vec.topk(lv, rv, depth)
        rl = vec.topk(rv, lv, depth)
        pen = {"l2r": rl[0][:, :csls_k].astype(np.float64).mean(axis=1) if csls_k else None,
               "r2l": lr[0][:, :csls_k].astype(np.float64).mean(axis=1) if csls_k else None}
        for direction, (q, c, qi, ti, lists) in {"l2r": (lv, rv, li, ri, lr),
                                                 "r2l": (rv, lv, ri, li, rl)}.items():
            for scoring, k in (("plain", 0), ("csls", csls_k)):
                rank = _listed_ranks(q, c, qi, ti, k, searcher, lists, pen[direction], vec)
                variants[f"{direction}/{scoring}/{name}"] = _summary(rank, hits)
    return variants


def _exact_variants(left, right, gl, gr, test, csls_k, hits, searcher) -> dict:
    """Every variant, exactly, with each CSLS penalty searched once per candidate set (both
    directions share them) and each direction's plain and CSLS ranks counted in one pass."""
    left = np.ascontiguousarray(left, np.float32)
    right = np.ascontiguousarray(right, np.float32)
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"query has d={left.shape[1]}, candidates d={right.shape[1]}")
    variants = {}
    local = np.arange(len(test), dtype=np.int64)
    # the field's protocol ("test"): test entities ranked among the other graph's test entities
    for name, (lv, rv, li, ri) in {"all": (left, right, gl, gr),
                                   "test": (left[gl[test]], right[gr[test]], local, local)
                                   }.items():
        csls = csls_k > 0 and len(li) > 0  # no gold pair: nothing to rank, nothing to search
        pen_l = pen_r = None
        if csls:  # both ways from one search
            lr, rl = searcher.topk_both(lv, rv, csls_k)
            pen_l, pen_r = _penalty(lr), _penalty(rl)
        for direction, (q, c, qi, ti, pq, pc) in {"l2r": (lv, rv, li, ri, pen_l, pen_r),
                                                  "r2l": (rv, lv, ri, li, pen_r, pen_l)}.items():
            ranks = _exact_ranks(q, c, qi, ti, [None] + ([(pq[qi], pc)] if csls else []))
            variants[f"{direction}/plain/{name}"] = _summary(ranks[0], hits)
            variants[f"{direction}/csls/{name}"] = _summary(ranks[-1], hits)
    return variants


def field_split(n_pairs: int, seed: int = 0, test_share: float = 0.7) -> np.ndarray:
    """Indices of the test pairs: the last ``test_share`` of a seeded shuffle (the field's
    30 / 70 split)."""
    order = np.random.default_rng(seed).permutation(n_pairs)
    return np.sort(order[n_pairs - int(round(test_share * n_pairs)):])


def _summary(rank: np.ndarray, hits: tuple[int, ...]) -> dict[str, float | int | None]:
    if len(rank) == 0:
        return {**{f"hits@{k}": None for k in hits}, "mrr": None, "pairs": 0}
    return {**{f"hits@{k}": float((rank <= k).mean()) for k in hits},
            "mrr": float((1.0 / rank).mean()), "pairs": int(len(rank))}


def alignment_metrics(left: np.ndarray, right: np.ndarray, gold_left: np.ndarray,
                      gold_right: np.ndarray, *, csls_k: int = 3, split_seed: int = 0,
                      hits: tuple[int, ...] = (1, 10), searcher: Searcher | None = None,
                      vectors: Vectors | None = None) -> dict:
    """Hits@k / MRR of aligned vectors against gold pairs.

    Headline keys (``hits@1``, ``hits@10``, ``mrr``): left -> right, plain scores, all gold
    pairs (``headline`` names that variant; the align runner may put another ranking there).
    ``variants``: ``{direction}/{plain|csls}/{all|test}`` for both directions, with and
    without CSLS (``csls_k``), over all pairs (every entity a candidate) and over the field's
    test split (test entities as candidates).  ``vectors``: how the approximate ranking
    reaches the vectors (default: ``left`` / ``right`` are arrays here; the exact ranking
    always takes arrays).
    """
    gl = np.asarray(gold_left, np.int64)
    gr = np.asarray(gold_right, np.int64)
    test = field_split(len(gl), split_seed)
    searcher = searcher or Searcher()
    exact = searcher.is_exact(max(len(left), len(right)))
    variants = {}
    if not exact and len(gl):
        if vectors is None:
            left = np.ascontiguousarray(left, np.float32)
            right = np.ascontiguousarray(right, np.float32)
        variants = _approximate_variants(left, right, gl, gr, test, csls_k, hits, searcher,
                                         vectors)
    if not variants:
        variants = _exact_variants(left, right, gl, gr, test, csls_k, hits, searcher)
    head = variants["l2r/plain/all"]
    return {**{f"hits@{k}": head[f"hits@{k}"] for k in hits}, "mrr": head["mrr"],
            "headline": "l2r/plain/all", "csls_k": csls_k, "split_seed": split_seed,
            "ranking": "exact" if exact else f"approximate (top {searcher.depth} per query)",
            "variants": variants}
