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
"""

from __future__ import annotations

import numpy as np

from psqe_ray.core.matching import greedy_one_to_one
from psqe_ray.core.topk import topk_search


def mic_keep(left_vecs: np.ndarray, right_vecs: np.ndarray) -> np.ndarray:
    """bool (S,): seed i survives iff right row i is the top-1 of left row i.

    left_vecs, right_vecs: float32 (S, d), row i = seed i's left / right entity's raw fused vector.
    """
    if len(left_vecs) == 0:
        return np.zeros(0, dtype=bool)
    _, ids = topk_search(left_vecs, right_vecs, 1)
    return ids[:, 0] == np.arange(len(left_vecs))


def schedule(position: int, total: int, start: float, end: float) -> float:
    """Linear interpolation from ``start`` (first seed) to ``end`` (last seed)."""
    if total <= 1:
        return start
    return start + (end - start) * position / (total - 1)


def expand_neighbours(seed_left: np.ndarray, seed_right: np.ndarray,
                      adj_left: tuple[np.ndarray, np.ndarray],
                      adj_right: tuple[np.ndarray, np.ndarray],
                      vec_left: np.ndarray, vec_right: np.ndarray,
                      taken_left: np.ndarray, taken_right: np.ndarray, *,
                      threshold_start: float = 0.8, threshold_end: float = 0.9,
                      candidates_start: int = 6, candidates_end: int = 3,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expand seeds to neighbour pairs (PSQE eq. 7).

    seed_left/seed_right: int64 (S,) in confidence order.  adj_*: CSR (indptr, indices) of each
    graph.  vec_*: float32 (n, d) normalised similarity vectors.  taken_*: bool (n,) masks of
    seeded entities (copied, not modified).  Returns (left ids, right ids, scores, index of the
    seed each pair was expanded from); new pairs never reuse an entity and never duplicate.
    """
    taken_l, taken_r = taken_left.copy(), taken_right.copy()
    out_l, out_r, out_s, out_p = [], [], [], []
    total = len(seed_left)
    (ipl, inl), (ipr, inr) = adj_left, adj_right
    for p, (l, r) in enumerate(zip(seed_left.tolist(), seed_right.tolist())):
        nl = inl[ipl[l]:ipl[l + 1]]
        nr = inr[ipr[r]:ipr[r + 1]]
        nl = nl[~taken_l[nl]]
        nr = nr[~taken_r[nr]]
        if len(nl) == 0 or len(nr) == 0:
            continue
        thr = schedule(p, total, threshold_start, threshold_end)
        cap = int(round(schedule(p, total, candidates_start, candidates_end)))
        k = min(cap, len(nr))
        s, j = topk_search(vec_left[nl], vec_right[nr], k)
        cl = np.repeat(nl, k)
        cr = nr[j.reshape(-1)]
        cs = s.reshape(-1)
        ok = j.reshape(-1) >= 0
        acc = greedy_one_to_one(cl[ok], cr[ok], cs[ok], limit=cap, min_score=thr,
                                taken_left=taken_l, taken_right=taken_r)
        if len(acc) == 0:
            continue
        al, ar = cl[ok][acc], cr[ok][acc]
        taken_l[al] = True
        taken_r[ar] = True
        out_l.append(al)
        out_r.append(ar)
        out_s.append(cs[ok][acc])
        out_p.append(np.full(len(acc), p, dtype=np.int64))
    if not out_l:
        z = np.zeros(0, np.int64)
        return z, z.copy(), np.zeros(0, np.float32), z.copy()
    return (np.concatenate(out_l), np.concatenate(out_r),
            np.concatenate(out_s).astype(np.float32), np.concatenate(out_p))
