"""Multimodal information correction (MIC, PSQE section 4.2.2) and neighbourhood expansion (4.3).

MIC: with ``X_L`` / ``X_R`` the raw fused vectors of the seeds' left / right entities, a seed
``i`` is kept iff ``argmax_j <X_L[i], X_R[j]> == i``: its partner is the most similar right
entity *among the seeds' right entities* (reference: left -> right only, exact maximum; ties go
to the smaller seed index, as in :func:`psqe_ray.core.topk.topk_search`).  At scale this is a
top-1 search of each seed's left vector over the seeds' right vectors, never an S x S matrix.

Expansion: for seed ``s`` at position ``p`` of the seed list (earlier = more confident), the
unseeded 1-hop neighbours of its left and right entities are compared with the Stage III
vectors (raw fused and learned, averaged); pairs above the threshold ``t(p)`` are accepted
greedily one-to-one, at most ``c(p)`` per seed, where ``t`` rises linearly from
``threshold_start`` to ``threshold_end`` and ``c`` falls from ``candidates_start`` to
``candidates_end`` along the list (the reference code's schedule).

Spread (ours, ``stage3.spread = degree``; off by default): a seed's neighbours are reached
through edges, so the expansion favours high-degree entities (a hub is the neighbour of many
seeds).  With degree quotas, each side's log2 degree buckets
(:func:`psqe_ray.core.seed_quality.bucket_index`) get a share of the seed list proportional to their
share of that side's entities, as Stage I splits its budget over clusters: the list size
``N`` is what the expansion reaches without quotas, bucket ``b`` gets ``N * n_b / n`` seeds
(largest remainder) less the seeds it already holds, and a pair is accepted only while both its
left and its right bucket have room.  The walk is otherwise the
same; quotas only ever skip a pair (its entities stay free for later seeds).
"""

from __future__ import annotations

import numpy as np

from psqe_ray.core.matching import greedy_one_to_one
from psqe_ray.core.seed_quality import bucket_index
from psqe_ray.core.sampling import cluster_budgets
from psqe_ray.core.search import Searcher
from psqe_ray.core.topk import canonical_scores


def mic_keep(left_vecs: np.ndarray, right_vecs: np.ndarray,
             searcher: Searcher | None = None) -> np.ndarray:
    """bool (S,): seed i survives iff right row i is the top-1 of left row i.

    left_vecs, right_vecs: float32 (S, d), row i = seed i's left / right entity's raw fused vector.
    ``searcher``: the search layer (exact at the seed counts PSQE produces).
    """
    if len(left_vecs) == 0:
        return np.zeros(0, dtype=bool)
    _, ids = (searcher or Searcher()).topk(left_vecs, right_vecs, 1)
    return ids[:, 0] == np.arange(len(left_vecs))


def schedule(position: int, total: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` (first seed) to ``end`` (last seed)."""
    if total <= 1:
        return start
    return start + (end - start) * position / (total - 1)


def expansion_candidates(positions: np.ndarray, seed_left: np.ndarray, seed_right: np.ndarray,
                         adj_left: tuple[np.ndarray, np.ndarray],
                         adj_right: tuple[np.ndarray, np.ndarray],
                         vec_left: np.ndarray, vec_right: np.ndarray,
                         taken_left: np.ndarray, taken_right: np.ndarray, total: int, *,
                         threshold_start: float = 0.8, threshold_end: float = 0.9,
                         ) -> dict[str, np.ndarray]:
    """Map step of the expansion: every neighbour pair of the seeds at ``positions`` that could
    ever be accepted.

    For seed ``p`` (entities ``seed_left[p]``, ``seed_right[p]``) these are the pairs (n, m) of an
    unseeded left neighbour and an unseeded right neighbour (by the *initial* ``taken_*`` masks)
    whose canonical score (:func:`~psqe_ray.core.topk.canonical_scores`) reaches the threshold
    ``t(p)``.  Fast float32 products only shortlist (a pair whose float32 score is more than the
    rounding bound below ``t(p)`` cannot reach it); the canonical score decides, so the result does
    not depend on how seeds are split into partitions.

    Returns columns ``position`` int64, ``left`` int64, ``right`` int64, ``score`` float32,
    ordered by position, left, score desc, right.
    """
    (ipl, inl), (ipr, inr) = adj_left, adj_right
    d = vec_left.shape[1]
    g = (d + 2) * 2.0 ** -23
    tiny = 4.0 * (d + 1) * float(np.finfo(np.float32).tiny)
    out = {"position": [], "left": [], "right": [], "score": []}
    for p in np.asarray(positions, np.int64).tolist():
        l, r = int(seed_left[p]), int(seed_right[p])
        nl = inl[ipl[l]:ipl[l + 1]]
        nr = inr[ipr[r]:ipr[r + 1]]
        nl = nl[~taken_left[nl]]
        nr = nr[~taken_right[nr]]
        if len(nl) == 0 or len(nr) == 0:
            continue
        thr = schedule(p, total, threshold_start, threshold_end)
        q, b = vec_left[nl], vec_right[nr]
        qn = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
        bmax = float(np.sqrt(np.einsum("ij,ij->i", b, b, dtype=np.float64)).max())
        fast = q @ b.T
        rows, cols = np.nonzero(fast.astype(np.float64) >= thr - (g * qn * bmax + tiny)[:, None])
        if len(rows) == 0:
            continue
        c = canonical_scores(vec_left, vec_right, nl[rows], nr[cols])
        ok = c.astype(np.float64) >= thr
        rows, cols, c = rows[ok], cols[ok], c[ok]
        order = np.lexsort((nr[cols], -c.astype(np.float64), nl[rows]))
        out["position"].append(np.full(len(order), p, np.int64))
        out["left"].append(nl[rows[order]])
        out["right"].append(nr[cols[order]])
        out["score"].append(c[order])
    dtypes = {"position": np.int64, "left": np.int64, "right": np.int64, "score": np.float32}
    return {k: (np.concatenate(v) if v else np.zeros(0, dtypes[k])).astype(dtypes[k], copy=False)
            for k, v in out.items()}


def expand_from_candidates(candidates: dict[str, np.ndarray], total: int,
                           taken_left: np.ndarray, taken_right: np.ndarray, *,
                           threshold_start: float = 0.8, threshold_end: float = 0.9,
                           candidates_start: int = 6, candidates_end: int = 3,
                           quota: "DegreeQuota | None" = None,
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reduce step: walk the seeds in confidence order over the map step's pairs.

    For seed ``p``: drop pairs on an entity taken so far (or, with a ``quota``, in a bucket
    without room); each left neighbour keeps its ``c(p)`` best remaining right neighbours
    (score desc, id asc: the top-k of a search over the remaining neighbours, restricted to
    pairs that can pass the threshold); accept greedily one to one, at most ``c(p)`` pairs at or
    above ``t(p)`` (with a quota: while their buckets have room).  Sequential over seeds (each
    seed's acceptances block the next ones) but vector work per seed; no similarity is computed
    here.  ``candidates`` must hold every position's pairs (the concatenation of all
    partitions).  ``quota`` is modified.
    """
    taken_l, taken_r = taken_left.copy(), taken_right.copy()
    pos = candidates["position"]
    order = np.lexsort((candidates["right"], -candidates["score"].astype(np.float64),
                        candidates["left"], pos))
    pos = pos[order]
    cl_all, cr_all, cs_all = (candidates[k][order] for k in ("left", "right", "score"))
    bounds = np.flatnonzero(np.diff(pos)) + 1
    starts = np.concatenate([[0], bounds]) if len(pos) else np.zeros(0, np.int64)
    ends = np.concatenate([bounds, [len(pos)]]) if len(pos) else np.zeros(0, np.int64)
    out_l, out_r, out_s, out_p = [], [], [], []
    for a, b in zip(starts.tolist(), ends.tolist()):
        p = int(pos[a])
        cl, cr, cs = cl_all[a:b], cr_all[a:b], cs_all[a:b]
        live = ~taken_l[cl] & ~taken_r[cr]
        if quota is not None:
            live &= quota.open(cl, cr)
        if not live.any():
            continue
        cl, cr, cs = cl[live], cr[live], cs[live]
        cap = int(round(schedule(p, total, candidates_start, candidates_end)))
        # rank of each pair among its left neighbour's remaining pairs (rows are grouped by left)
        first = np.concatenate([[True], cl[1:] != cl[:-1]])
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(cl)), 0))
        keep = (np.arange(len(cl)) - group_start) < cap
        cl, cr, cs = cl[keep], cr[keep], cs[keep]
        thr = schedule(p, total, threshold_start, threshold_end)
        if quota is None:
            acc = greedy_one_to_one(cl, cr, cs, limit=cap, min_score=thr,
                                    taken_left=taken_l, taken_right=taken_r)
        else:
            acc = quota.accept(cl, cr, cs, cap, thr, taken_l, taken_r)
        if len(acc) == 0:
            continue
        al, ar = cl[acc], cr[acc]
        taken_l[al] = True
        taken_r[ar] = True
        out_l.append(al)
        out_r.append(ar)
        out_s.append(cs[acc])
        out_p.append(np.full(len(acc), p, dtype=np.int64))
    if not out_l:
        z = np.zeros(0, np.int64)
        return z, z.copy(), np.zeros(0, np.float32), z.copy()
    return (np.concatenate(out_l), np.concatenate(out_r),
            np.concatenate(out_s).astype(np.float32), np.concatenate(out_p))


class DegreeQuota:
    """Room left per log2 degree bucket on each side (see the module docstring, "Spread").

    ``bucket_left`` / ``bucket_right``: int64 (n,) bucket of every entity; ``room_left`` /
    ``room_right``: int64 (B,) seeds each bucket may still take (lowered as pairs are taken).
    """

    def __init__(self, degree_left: np.ndarray, degree_right: np.ndarray,
                 seed_left: np.ndarray, seed_right: np.ndarray, size: int):
        self.bucket_left = bucket_index(np.asarray(degree_left))
        self.bucket_right = bucket_index(np.asarray(degree_right))
        nb = int(max(self.bucket_left.max(initial=0), self.bucket_right.max(initial=0))) + 1
        self.room_left = self._room(self.bucket_left, np.asarray(seed_left, np.int64), nb, size)
        self.room_right = self._room(self.bucket_right, np.asarray(seed_right, np.int64), nb, size)

    @staticmethod
    def _room(bucket: np.ndarray, seeds: np.ndarray, nb: int, size: int) -> np.ndarray:
        share = cluster_budgets(np.bincount(bucket, minlength=nb), size)
        return np.maximum(share - np.bincount(bucket[seeds], minlength=nb), 0)

    def open(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """bool mask: the pair's left and right buckets both have room."""
        return (self.room_left[self.bucket_left[left]] > 0) & \
            (self.room_right[self.bucket_right[right]] > 0)

    def accept(self, left: np.ndarray, right: np.ndarray, score: np.ndarray, cap: int,
               thr: float, taken_left: np.ndarray, taken_right: np.ndarray) -> np.ndarray:
        """:func:`greedy_one_to_one` that also skips a pair whose bucket has no room left.

        The vector greedy answers whenever its pairs fit the rooms (then no room check could
        have fired); otherwise the same walk runs pair by pair with the room checks.
        """
        acc = greedy_one_to_one(left, right, score, limit=cap, min_score=thr,
                                taken_left=taken_left, taken_right=taken_right)
        if not self._fits(left[acc], right[acc]):
            acc = self._walk(left, right, score, cap, thr, taken_left, taken_right)
        self._take(left[acc], right[acc])
        return acc

    def _needs(self, left, right) -> tuple[np.ndarray, np.ndarray]:
        nb = len(self.room_left)
        return (np.bincount(self.bucket_left[left], minlength=nb),
                np.bincount(self.bucket_right[right], minlength=nb))

    def _fits(self, left, right) -> bool:
        need_l, need_r = self._needs(left, right)
        return bool((need_l <= self.room_left).all() and (need_r <= self.room_right).all())

    def _take(self, left, right) -> None:
        need_l, need_r = self._needs(left, right)
        self.room_left -= need_l
        self.room_right -= need_r

    def _walk(self, left, right, score, cap, thr, taken_left, taken_right) -> np.ndarray:
        room_l, room_r = self.room_left.copy(), self.room_right.copy()
        used_l, used_r, acc = set(), set(), []
        for e in np.lexsort((right, left, -score.astype(np.float64))).tolist():
            if len(acc) >= cap or float(score[e]) < thr:
                break
            a, b = int(left[e]), int(right[e])
            ba, bb = self.bucket_left[a], self.bucket_right[b]
            if a in used_l or b in used_r or taken_left[a] or taken_right[b] \
                    or room_l[ba] <= 0 or room_r[bb] <= 0:
                continue
            used_l.add(a)
            used_r.add(b)
            room_l[ba] -= 1
            room_r[bb] -= 1
            acc.append(e)
        return np.asarray(acc, np.int64)


def expand_spread(candidates: dict[str, np.ndarray], seed_left: np.ndarray,
                  seed_right: np.ndarray, degree_left: np.ndarray, degree_right: np.ndarray,
                  taken_left: np.ndarray, taken_right: np.ndarray, *, spread: str = "degree",
                  **schedule_kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reduce step with the seed list's spread as a goal (``spread``: ``degree`` or ``off``).

    ``degree``: a first walk without quotas gives the list size ``N = |seeds| + |expansion|``;
    the second walk, the answer, keeps each side's degree buckets to their share of ``N``
    (:class:`DegreeQuota`).  ``off``: the paper's walk.  ``schedule_kw``: the threshold and
    candidate schedule of :func:`expand_from_candidates`, whose return this has.
    """
    total = len(seed_left)
    if spread == "off":
        return expand_from_candidates(candidates, total, taken_left, taken_right, **schedule_kw)
    if spread != "degree":
        raise ValueError(f"spread must be degree or off, got {spread!r}")
    first = expand_from_candidates(candidates, total, taken_left, taken_right, **schedule_kw)
    quota = DegreeQuota(degree_left, degree_right, seed_left, seed_right, total + len(first[0]))
    return expand_from_candidates(candidates, total, taken_left, taken_right, quota=quota,
                                  **schedule_kw)


def expand_neighbours(seed_left: np.ndarray, seed_right: np.ndarray,
                      adj_left: tuple[np.ndarray, np.ndarray],
                      adj_right: tuple[np.ndarray, np.ndarray],
                      vec_left: np.ndarray, vec_right: np.ndarray,
                      taken_left: np.ndarray, taken_right: np.ndarray, *,
                      threshold_start: float = 0.8, threshold_end: float = 0.9,
                      candidates_start: int = 6, candidates_end: int = 3,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expand seeds to neighbour pairs (PSQE eq. 7): the map step over every seed, then the reduce.

    seed_left/seed_right: int64 (S,) in confidence order.  adj_*: CSR (indptr, indices) of each
    graph.  vec_*: float32 (n, d) normalised similarity vectors.  taken_*: bool (n,) masks of
    seeded entities (copied, not modified).  Returns (left ids, right ids, scores, index of the
    seed each pair was expanded from); new pairs never reuse an entity and never duplicate.
    The distributed path runs :func:`expansion_candidates` per seed partition instead.
    """
    total = len(seed_left)
    cand = expansion_candidates(np.arange(total), seed_left, seed_right, adj_left, adj_right,
                                vec_left, vec_right, taken_left, taken_right, total,
                                threshold_start=threshold_start, threshold_end=threshold_end)
    return expand_from_candidates(cand, total, taken_left, taken_right,
                                  threshold_start=threshold_start, threshold_end=threshold_end,
                                  candidates_start=candidates_start, candidates_end=candidates_end)
