"""Blocked exact top-k inner-product search with an associative, commutative merge.

Used wherever PSQE searches one graph's vectors against the other's: Stage II global sampling
(paper 4.2: left x right over the whole graphs), the multimodal information correction (4.2.2, a
top-1 search of each seed's left vector among the seeds' right vectors) and Stage III's recheck
(4.3).  Nothing here ever holds an ``n x m`` similarity matrix: queries and base vectors are cut
into blocks of at most ``block`` rows, each ``block x block`` score tile is reduced to a few
float32 candidates per query row at once, and a query block's candidates are cut once more and
rescored when it has met every base block (memory ``O(n * k + block * k * m / block + block**2
+ block * d)``).

The result is a *function of the inputs only*:

    for each query row i, the k base rows j maximising the canonical score c(i, j), ordered by
    (c desc, id asc),  c(i, j) = fl32( sum_t q[i, t] * b[j, t] )

where each product of two float32 numbers is formed exactly in float64, the float64 sum is
numpy's pairwise summation of the contiguous row of products (its order is fixed by ``d`` alone:
numpy unrolls it by 8 "without changing summation ordering" under any SIMD target, and it does not
depend on how many rows are reduced together), and ``fl32`` rounds to the nearest float32
(``-0.0`` is normalised to ``+0.0``).  Fast float32 kernels (BLAS ``sgemm`` for "numpy",
``IndexFlatIP`` for "faiss") only *shortlist* candidates; their rounding differs between
backends, block shapes, thread counts and machines, so they never decide the final order.

Each query block meets every base block in float32 first.  In one base block, query row i keeps
every candidate whose fast score ``a`` satisfies

    a >= max(a_(k), A_i) - 2 E_i,     E_i = (d + 2) 2^-23 ||q_i|| max_j ||b_j|| + tiny

where ``a_(k)`` is (a lower bound on) the block's k-th largest fast score, ``A_i`` the largest
such bound of the blocks before (each one bounds the k-th fast score over the whole base from
below), the max runs over the whole base, and ``E_i`` is twice the worst-case gap ``|a - c|``
(the float32 dot-product error bound ``gamma_d sum|q_t b_t|`` plus the canonical rounding, with
Cauchy-Schwarz).  When every block is done, the whole base's k-th largest fast score ``K_i`` is
among the candidates (each of the base's k best is among its own block's k best), and the
candidates below ``K_i - 2 E_i`` are dropped as well.  A dropped candidate's canonical score
(``< a + E_i/2``) is below that of k others (each ``> K_i - E_i/2``), so it cannot be in the
exact top-k; only the survivors, about k per row, are rescored canonically and the exact top-k
taken from them.  Hence output is bit-identical across ``block`` sizes, backends and any split
of the base into shards merged with :func:`merge_topk` in any order.

Costs that are not arithmetic: the float32 candidates are about ``k`` per row and block, the
rescored ones about ``k`` per row (more only when many fast scores lie within ``2 E_i`` of the
k-th, e.g. exact ties).  All-zero query rows are answered
without search (every score is exactly 0, so the k smallest ids win) and all-zero base rows after
the first ``k`` are skipped (they tie at 0 with smaller-id zero rows), so missing-modality zero
vectors do not blow up the shortlist.

Vectors float32 cannot tell apart (nearly parallel, e.g. a collapsed learned embedding, or many
identical rows) put every pair of a tile inside the band.  A query block whose tile holds more
than ``_BAND_LIMIT * k`` candidates per row on average (numpy), or a row that needs more than
that many (faiss), drops its candidates and takes float64 tiles instead
(:func:`_canonical_tile`): one ``dgemm`` per tile, rounded to float32, which is the canonical
score unless the float64 sum lies within its error bound of a float32 rounding midpoint (those
few pairs are rescored canonically); each tile is reduced to its exact top-k at once, so memory
stays at the tile.  The same bits; measured on 3,000 x 3,000 such vectors (d = 300, both ways):
59.4 s and 1.24 GiB before, 4.6 s and 0.45 GiB after.

Measured on this project's 2-core AMD EPYC VM (numpy 2.4 with OpenBLAS, faiss-cpu 1.15), unit-norm
random vectors, ``n = m = 20,000, k = 10, block = 4096``, idle machine: ``d = 256`` numpy 2.4 s,
faiss 2.1 s (the 25 ``sgemm`` tiles alone: 1.4 s); ``d = 32`` numpy 1.2 s, faiss 1.0 s.  With
other jobs on the two cores, about twice that.  Canonical rescoring is ~15 % of the d = 256 time.
With ``d = 512, n = m = 19,000`` (``benchmarks/search_costs.py``, idle): k = 1 both ways 8.2 s
as two searches, 3.9 s in one pass (:func:`topk_search_both`); k = 50: 15.0 s and 13.8 s.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

try:  # faiss is optional (the "cpu"/"gpu" extras); "auto" falls back to numpy without it
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

__all__ = ["BACKENDS", "canonical_scores", "empty_topk", "merge_topk", "topk_from_candidates",
           "topk_search", "topk_search_both"]

BACKENDS = ("auto", "numpy", "faiss")
TopK = tuple[np.ndarray, np.ndarray]

_F32_MAX = float(np.finfo(np.float32).max)
# Products (pairs x d) formed per rescoring step: bounds the float64 buffer to 8 MiB.
_RESCORE_ELEMENTS = 1 << 20
# Extra neighbours asked of faiss beyond k so that the band test usually passes at the first try.
_FAISS_SLACK = 4
# A tile whose float32 band holds more than this many candidates per query row and k (vectors
# so alike that float32 cannot tell them apart) switches its query block to float64 tiles.
_BAND_LIMIT = 16
# Query rows per float64 tile on that path (its tile and bound: 16 bytes x this x block).
_TILE_ROWS = 1024


def empty_topk(n: int, k: int) -> TopK:
    """All-padding result: scores ``(n, k)`` float32 ``-inf``, ids ``(n, k)`` int64 ``-1``."""
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def canonical_scores(query: np.ndarray, base: np.ndarray, rows: np.ndarray,
                     cols: np.ndarray) -> np.ndarray:
    """Canonical inner products ``c(rows[e], cols[e])`` of selected pairs.

    ``c(i, j) = fl32(pairwise_sum_t fl64(query[i, t]) * fl64(base[j, t])) + 0.0``: exact float64
    products, numpy's pairwise float64 sum along the contiguous axis (order fixed by ``d``), one
    rounding to float32, ``-0.0`` folded into ``+0.0``.  The value depends on the two vectors only,
    never on which or how many other pairs are scored in the same call.

    query (n, d) float32, base (m, d) float32, rows (E,) int64 in [0, n), cols (E,) int64 in
    [0, m) -> (E,) float32.
    """
    e = rows.shape[0]
    out = np.empty(e, np.float32)
    d = query.shape[1]
    step = max(1, _RESCORE_ELEMENTS // max(d, 1))
    for s in range(0, e, step):
        prod = query[rows[s:s + step]].astype(np.float64)
        prod *= base[cols[s:s + step]]
        # add.reduce over the contiguous last axis of a float64 array runs numpy's pairwise sum
        # on each whole row, without buffering: the summation order depends on d only.
        out[s:s + step] = np.add.reduce(prod, axis=1)
    out += np.float32(0.0)
    return out


def _canonical_tile(qb: np.ndarray, bb: np.ndarray, qnorm: np.ndarray, bnorm: np.ndarray,
                    k: int | None = None) -> np.ndarray:
    """``canonical_scores`` of every pair of a tile, the same bits, from one float64 product.

    qb (bq, d), bb (bn, d) float32; qnorm (bq,), bnorm (bn,) their float64 norms -> (bq, bn)
    float32.  The float64 ``dgemm`` sum v and the canonical float64 sum differ from the exact
    sum by at most ``gamma_d sum_t |q_t b_t| <= gamma_d ||q|| ||b||`` each (products of float32
    numbers are exact in float64; any order of summation), so they round to the same float32
    unless v lies within twice that of a float32 rounding midpoint (the midpoints of two
    adjacent float32 numbers are exact in float64).  Those few pairs are rescored by
    :func:`canonical_scores`.  ``bound`` below is 4x that margin, which also covers the
    rounding of the norms and of ``v - midpoint``.

    With ``k``, only the pairs that can be among their row's top ``k`` are rescored: a pair with
    ``fl32(v + bound) < fl32(T)``, T the row's k-th largest ``v - bound``, is strictly below k
    canonical scores of its row whatever its last bit (rounding is monotonic), so it may keep
    ``fl32(v)``.  Without it, vectors with many zero or tiny scores (sparse bags: the bound
    exceeds float32's spacing near zero) would send most of the tile to the gather.
    """
    v = qb.astype(np.float64) @ bb.astype(np.float64).T
    f = v.astype(np.float32)
    bound = (8.0 * (qb.shape[1] + 2) * 2.0 ** -53) * np.outer(qnorm, bnorm) + 1e-300
    near = _near_midpoint(v, f, bound)
    if k is not None and v.shape[1] > k and near.any():
        kth = np.partition(v - bound, v.shape[1] - k, axis=1)[:, v.shape[1] - k]
        near &= (v + bound).astype(np.float32) >= kth.astype(np.float32)[:, None]
    r, c = np.nonzero(near)
    if r.size:
        f[r, c] = canonical_scores(qb, bb, r, c)
    f += np.float32(0.0)
    return f


def _near_midpoint(v: np.ndarray, f: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """bool: float64 ``v`` lies within ``bound`` of a midpoint between ``f = fl32(v)`` and a
    float32 neighbour (so a sum that close to v may round to another float32)."""
    here = f.astype(np.float64)
    return (v - 0.5 * (here + np.nextafter(f, np.float32(-np.inf))) <= bound) | \
        (0.5 * (here + np.nextafter(f, np.float32(np.inf))) - v <= bound)


def _topk_tiles(query: np.ndarray, base: np.ndarray, qrows: np.ndarray, bcols: list,
                qnorm: np.ndarray, bnorm: np.ndarray, k: int, base_offset: int) -> TopK:
    """The exact top-k of query rows ``qrows`` from canonical tiles (:func:`_canonical_tile`)
    against each base block's columns in ``bcols``, reduced block by block: the path for
    vectors so alike that the float32 band would keep nearly every pair."""
    out = empty_topk(qrows.size, k)
    for q0 in range(0, qrows.size, _TILE_ROWS):  # float64 tiles of at most _TILE_ROWS rows
        rows = qrows[q0:q0 + _TILE_ROWS]
        qb, got = query[rows], empty_topk(rows.size, k)
        for cols in bcols:
            t = _canonical_tile(qb, base[cols], qnorm[rows], bnorm[cols], k)
            if cols.size > k:  # every entry >= the row's k-th value (ties included) is kept
                kth = np.partition(t, cols.size - k, axis=1)[:, cols.size - k]
                r, c = np.nonzero(t >= kth[:, None])
            else:
                r, c = np.nonzero(np.ones(t.shape, bool))
            got = merge_topk(got, _topk_from_flat(r, t[r, c], cols[c] + base_offset,
                                                  rows.size, k), k)
        out[0][q0:q0 + rows.size], out[1][q0:q0 + rows.size] = got
    return out


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, d), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _row_norms(x: np.ndarray, name: str) -> np.ndarray:
    """Euclidean norms (rows,) float64, computed in bounded chunks; rejects inf/nan rows."""
    out = np.empty(x.shape[0], np.float64)
    step = max(1, _RESCORE_ELEMENTS // max(x.shape[1], 1))
    for s in range(0, x.shape[0], step):
        chunk = x[s:s + step].astype(np.float64)
        out[s:s + step] = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains inf or nan")
    return out


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "faiss" if faiss is not None else "numpy"
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss package (install psqe-ray[cpu])")
    return backend


def _descending_key(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """uint64 sort keys ordering (row asc, score desc) like ``lexsort((-scores, rows))``:
    the row in the high 32 bits, the float32 score's bits mapped to an order-reversing uint32
    in the low ones (``-0.0`` and ``+0.0`` get one key, as they compare equal)."""
    bits = (scores.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    return (rows.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)


def _order(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The permutation ``np.lexsort((ids, -scores, rows))``: one sort of a combined key, and
    a second (by id first) only when some row holds equal scores."""
    key = _descending_key(rows, scores)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if np.any(ordered[1:] == ordered[:-1]):  # ties: order by id first, then stably by key
        by_id = np.argsort(ids, kind="stable")
        order = by_id[np.argsort(key[by_id], kind="stable")]
    return order


def _topk_from_flat(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray, n: int, k: int,
                    dedupe: bool = False) -> TopK:
    """Per-row top-k of a flat candidate list, ordered by (score desc, id asc).

    rows (E,) int64 in [0, n), scores (E,) float32, ids (E,) int64 >= 0 -> scores (n, k) float32,
    ids (n, k) int64, padded with (-inf, -1).  With ``dedupe`` an id listed twice for the same row
    counts once, with its larger score.
    """
    out_s, out_i = empty_topk(n, k)
    if rows.size == 0 or k == 0:
        return out_s, out_i
    order = _order(rows, scores, ids)
    rows, scores, ids = rows[order], scores[order], ids[order]
    if dedupe:  # an id's first entry in its row is its best: drop the later ones
        pair = np.lexsort((ids, rows))
        later = np.zeros(rows.size, bool)
        later[pair[1:]] = (rows[pair[1:]] == rows[pair[:-1]]) & (ids[pair[1:]] == ids[pair[:-1]])
        if later.any():
            rows, scores, ids = rows[~later], scores[~later], ids[~later]
    starts = np.searchsorted(rows, np.arange(n, dtype=rows.dtype))
    rank = np.arange(rows.size) - starts[rows]
    keep = rank < k
    out_s[rows[keep], rank[keep]] = scores[keep]
    out_i[rows[keep], rank[keep]] = ids[keep]
    return out_s, out_i


def topk_from_candidates(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray, n: int,
                         k: int) -> TopK:
    """Per-row top-k of candidate triples (row, score, id), an id listed twice for a row counted
    once: scores (n, k) float32 / ids (n, k) int64, (score desc, id asc), padded (-inf, -1)."""
    return _topk_from_flat(np.asarray(rows, np.int64), np.asarray(scores, np.float32),
                           np.asarray(ids, np.int64), n, k, dedupe=True)


def merge_topk(a: TopK, b: TopK, k: int) -> TopK:
    """Merge two partial results for the same query rows into their joint top-k.

    a = (scores (n, ka) float32, ids (n, ka) int64), b likewise with width kb; padding entries
    (id -1) are ignored -> (scores (n, k) float32 descending, ids (n, k) int64), ties by smaller
    id, padded with (-inf, -1).  Mathematically ``top_k(A u B)`` under the total order
    (score desc, id asc), with an id present in both kept once: associative, commutative and
    idempotent, so any merge tree over any split of the base gives identical bits.  Inputs from
    :func:`topk_search` on disjoint base shards (each with its ``base_offset``) merge into exactly
    the unsharded result.
    """
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    parts = []
    n = None
    for name, (s, i) in (("a", a), ("b", b)):
        s = np.asarray(s, np.float32)
        i = np.asarray(i, np.int64)
        if s.ndim != 2 or s.shape != i.shape:
            raise ValueError(f"{name}: scores and ids must be 2-D of one shape, got "
                             f"{s.shape} and {i.shape}")
        if n is not None and s.shape[0] != n:
            raise ValueError(f"a has {n} query rows, b has {s.shape[0]}")
        n = s.shape[0]
        parts.append((s, i))
    s = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    pad = i < 0
    real = np.where(pad, -1, i)
    if k == 0 or n == 0 or not (~pad).any():
        return empty_topk(n, k)
    by_id = np.sort(real, axis=1)
    if i.max() >= 1 << 32 or np.any((by_id[:, 1:] == by_id[:, :-1]) & (by_id[:, 1:] >= 0)):
        # an id twice in a row (or ids past 32 bits): the flat path, which dedupes
        r, c = np.nonzero(~pad)
        return _topk_from_flat(r, s[r, c], i[r, c], n, k, dedupe=True)
    # one sort per row of a 64-bit key: (score desc, id asc), padding last
    key = _descending_key(np.zeros_like(s, np.uint32), s) << np.uint64(32)
    key |= real.astype(np.uint64)
    key[pad] = np.iinfo(np.uint64).max
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_s, out_i = empty_topk(n, k)
    w = order.shape[1]
    taken = np.take_along_axis(pad, order, axis=1)
    out_s[:, :w] = np.where(taken, -np.inf, np.take_along_axis(s, order, axis=1))
    out_i[:, :w] = np.where(taken, -1, np.take_along_axis(i, order, axis=1))
    return out_s, out_i


def _round_down_f32(x: np.ndarray) -> np.ndarray:
    """float64 thresholds (n,) -> float32 (n,) values <= them: float32 compares never drop one."""
    y = x.astype(np.float32)
    too_high = y.astype(np.float64) > x
    y[too_high] = np.nextafter(y[too_high], np.float32(-np.inf))
    return y


def _thresholds(kth: np.ndarray, floor: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Shortlist cut per row (see module docstring): max(a_(k), A) - 2E, as float32."""
    cut = np.maximum(kth.astype(np.float64), floor.astype(np.float64)) - 2.0 * err
    return _round_down_f32(cut)


def _shortlist_numpy(qb: np.ndarray, bb: np.ndarray, k: int, floor: np.ndarray,
                     err: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of one (query block, base block) tile from a float32 BLAS product.

    qb (bq, d) float32, bb (bn, d) float32, floor (bq,) float32 (a lower bound on each row's
    k-th fast score over the whole base), err (bq,) float64 -> rows, cols (int64 local
    indices of every pair that may be in the exact top-k), their fast scores (float32) and a
    lower bound on each row's k-th largest fast score in this block (bq,) float32.

    Instead of partitioning the whole tile, its columns are dealt into G groups (column
    ``t * G + g`` goes to group g); the k-th largest group maximum is a lower bound on a_(k)
    (k groups hold a value at least that large), and only groups whose maximum clears the cut
    are looked into.  Strided groups make the group maximum an elementwise ``maximum`` of w
    contiguous column slices, several times faster than reducing short contiguous runs.
    """
    return _shortlist_tile(qb @ bb.T, k, floor, err)


def _shortlist_tile(s: np.ndarray, k: int, floor: np.ndarray, err: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_shortlist_numpy` of a score tile already computed: s (bq, bn) float32."""
    bq, bn = s.shape
    if bn <= k:
        kth = np.full(bq, -np.inf, np.float32)
        rows, cols = np.nonzero(s >= _thresholds(kth, floor, err)[:, None])
        return rows, cols, s[rows, cols], kth
    w = min(64, bn // (4 * k))
    if w <= 1:
        kth = np.partition(s, bn - k, axis=1)[:, bn - k]
        rows, cols = np.nonzero(s >= _thresholds(kth, floor, err)[:, None])
        return rows, cols, s[rows, cols], kth
    groups = bn // w
    dealt = s[:, :groups * w].reshape(bq, w, groups)
    gmax = dealt.max(axis=1)
    kth = np.partition(gmax, groups - k, axis=1)[:, groups - k]
    cut = _thresholds(kth, floor, err)
    r, g = np.nonzero(gmax >= cut[:, None])
    pi, ti = np.nonzero(dealt[r, :, g] >= cut[r][:, None])
    rows, cols = r[pi], ti * groups + g[pi]
    if groups * w < bn:
        tr, tc = np.nonzero(s[:, groups * w:] >= cut[:, None])
        rows = np.concatenate([rows, tr])
        cols = np.concatenate([cols, tc + groups * w])
    return rows, cols, s[rows, cols], kth


def _shortlist_columns(s: np.ndarray, k: int, floor: np.ndarray, err: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_shortlist_tile` of ``s.T`` without transposing the tile (a transpose costs as
    much as the product): the candidates of each column of s (bq, bn) as (column, row, fast
    score), and a lower bound on each column's k-th largest value (bn,).  The rows are dealt
    into strided groups, as the columns are there; the group maxima are reductions over the
    leading axis, which run along contiguous rows."""
    bq, bn = s.shape
    w = min(64, bq // (4 * k))
    if bq <= k or w <= 1:
        kth = np.full(bn, -np.inf, np.float32) if bq <= k else \
            np.partition(s, bq - k, axis=0)[bq - k]
        rows, cols = np.nonzero(s >= _thresholds(kth, floor, err)[None, :])
        return cols, rows, s[rows, cols], kth
    groups = bq // w
    dealt = s[:groups * w].reshape(w, groups, bn)  # row t * groups + g is dealt[t, g]
    gmax = dealt.max(axis=0)
    # the k-th largest group maximum bounds the column's k-th value from below (the rows
    # left over after the groups are compared with the cut one by one)
    kth = np.partition(gmax, groups - k, axis=0)[groups - k]
    cut = _thresholds(kth, floor, err)
    g, c = np.nonzero(gmax >= cut[None, :])
    ti, pi = np.nonzero(dealt[:, g, c] >= cut[c][None, :])
    rows, cols = ti * groups + g[pi], c[pi]
    if groups * w < bq:
        tr, tc = np.nonzero(s[groups * w:] >= cut[None, :])
        rows = np.concatenate([rows, tr + groups * w])
        cols = np.concatenate([cols, tc])
    return cols, rows, s[rows, cols], kth


def _shortlist_faiss(index, qb: np.ndarray, bn: int, k: int, floor: np.ndarray,
                     err: np.ndarray, give_up: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Same contract as :func:`_shortlist_numpy`, from ``IndexFlatIP`` searches.

    faiss returns the kk best fast scores; that list contains every candidate above the cut
    only if its last score is already below the cut (or it holds the whole block), so rows
    failing that test are searched again with 4x kk.  None when a row would need more than
    ``give_up`` candidates (vectors float32 cannot tell apart: the caller's float64 tiles).
    """
    rows_out, cols_out, fast_out = [], [], []
    pending = np.arange(qb.shape[0])
    kk = min(bn, k + _FAISS_SLACK)
    block_kth = None
    while pending.size:
        dist, lab = index.search(qb[pending], kk)
        kth = dist[:, k - 1] if kk >= k else np.full(pending.size, -np.inf, np.float32)
        if block_kth is None:
            block_kth = kth.astype(np.float32)
        cut = _thresholds(kth, floor[pending], err[pending])
        done = (kk == bn) | (dist[:, kk - 1] < cut)
        r, c = np.nonzero((dist >= cut[:, None]) & (lab >= 0) & done[:, None])
        rows_out.append(pending[r])
        cols_out.append(lab[r, c])
        fast_out.append(dist[r, c])
        pending = pending[~done]
        if pending.size and give_up is not None and kk >= give_up:
            return None
        kk = min(bn, kk * 4)
    return (np.concatenate(rows_out), np.concatenate(cols_out),
            np.concatenate(fast_out).astype(np.float32), block_kth)


def _kth_per_row(rows: np.ndarray, fast: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n,) float32: each row's k-th largest value of ``fast`` (-inf when it has fewer)."""
    out = np.full(n, -np.inf, np.float32)
    order = np.argsort(_descending_key(rows, fast), kind="stable")
    r = rows[order]
    starts = np.searchsorted(r, np.arange(n, dtype=r.dtype))
    at = np.flatnonzero(np.arange(r.size) - starts[r] == k - 1)
    out[r[at]] = fast[order[at]]
    return out


def _error_terms(d: int, qnorm: np.ndarray, bnorm: np.ndarray) -> tuple[float, float]:
    """(g, tiny) of the bound ``E_i = g ||q_i|| max_j ||b_j|| + tiny`` (module docstring), once
    no float32 inner product of these rows can overflow.  ``tiny`` stays tiny unless BLAS
    flushes subnormals (each product then errs by < 2^-126)."""
    g = (d + 2) * 2.0 ** -23
    if qnorm.max() * bnorm.max() * (1.0 + g) >= _F32_MAX:
        raise ValueError("inner products may overflow float32; rescale the vectors")
    return g, 4.0 * (d + 1) * float(np.finfo(np.float32).tiny)


def _finish(query: np.ndarray, base: np.ndarray, qrows: np.ndarray, parts: list, floor,
            err, k: int, base_offset: int = 0) -> TopK:
    """The exact top-k of the query rows ``qrows`` from their float32 candidates ``parts``
    ((local rows, base cols, fast scores) from every base block): the k-th largest fast score
    over the whole base is among them, so one last cut, then only the survivors are
    rescored canonically."""
    r, c, a = (np.concatenate(x) for x in zip(*parts))
    keep = a >= _thresholds(_kth_per_row(r, a, qrows.size, k), floor, err)[r]
    r, c = r[keep], c[keep]
    return _topk_from_flat(r, canonical_scores(query, base, qrows[r], c), c + base_offset,
                           qrows.size, k)


# topk_search_both keeps every right row's float32 candidates until the end: above this many
# (about 20 bytes each) it runs two searches instead
_BOTH_MAX_CANDIDATES = 1 << 24


def topk_search_both(left: np.ndarray, right: np.ndarray, k: int, *, block: int = 4096,
                     on_block: Callable[[int, int], None] | None = None) -> tuple[TopK, TopK]:
    """``(topk_search(left, right, k), topk_search(right, left, k))``, the same bits, from one
    pass over the score tiles: each float32 tile ``left_block @ right_block.T`` is shortlisted
    by rows for the left queries and by columns for the right ones, so the arithmetic is paid
    once instead of twice (mutual nearest neighbours, CSLS penalties, the candidate graph of
    the one-to-one assignment all ask both ways).  The right rows' float32 candidates are
    kept until every left block is done (``O(m * k * n / block)``): when that would pass
    :data:`_BOTH_MAX_CANDIDATES`, or a side holds an all-zero row (answered without search in
    :func:`topk_search`), it runs the two searches.  ``on_block(done, total)`` after each
    left block."""
    left = _as_matrix(left, "left")
    right = _as_matrix(right, "right")
    k, block = int(k), int(block)
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"query has d={left.shape[1]}, base has d={right.shape[1]}")
    if k < 0 or block < 1:
        raise ValueError(f"need k >= 0, block >= 1; got {k}, {block}")
    n, d = left.shape
    m = right.shape[0]
    blocks = -(-n // block)
    lnorm = _row_norms(left, "left")
    rnorm = _row_norms(right, "right")
    def two_searches() -> tuple[TopK, TopK]:
        out = (topk_search(left, right, k, block=block), topk_search(right, left, k, block=block))
        if on_block is not None:
            on_block(blocks, blocks)
        return out

    if n == 0 or m == 0 or k == 0 or not (lnorm > 0).all() or not (rnorm > 0).all() \
            or m * blocks * k > _BOTH_MAX_CANDIDATES:
        return two_searches()
    g, tiny = _error_terms(d, lnorm, rnorm)
    err_l = g * float(rnorm.max()) * lnorm + tiny
    err_r = g * float(lnorm.max()) * rnorm + tiny
    floor_r = np.full(m, -np.inf, np.float32)
    parts_r: list[list] = [[] for _ in range(0, m, block)]
    lr = empty_topk(n, k)
    for i, a0 in enumerate(range(0, n, block)):
        lrows = np.arange(a0, min(n, a0 + block))
        floor = np.full(lrows.size, -np.inf, np.float32)
        parts = []
        for j, b0 in enumerate(range(0, m, block)):
            b1 = min(m, b0 + block)
            s = left[a0:a0 + block] @ right[b0:b1].T
            r, c, a, kth = _shortlist_tile(s, k, floor, err_l[lrows])
            if r.size > _BAND_LIMIT * k * lrows.size:  # vectors float32 cannot tell apart
                return two_searches()
            parts.append((r, c + b0, a))
            floor = np.maximum(floor, kth)
            r, c, a, kth = _shortlist_columns(s, k, floor_r[b0:b1], err_r[b0:b1])
            if r.size > _BAND_LIMIT * k * (b1 - b0):
                return two_searches()
            parts_r[j].append((r, c + a0, a))
            floor_r[b0:b1] = np.maximum(floor_r[b0:b1], kth)
        lr[0][lrows], lr[1][lrows] = _finish(left, right, lrows, parts, floor, err_l[lrows], k)
        if on_block is not None:
            on_block(i + 1, blocks)
    rl = empty_topk(m, k)
    for j, b0 in enumerate(range(0, m, block)):
        rrows = np.arange(b0, min(m, b0 + block))
        rl[0][rrows], rl[1][rrows] = _finish(right, left, rrows, parts_r[j], floor_r[rrows],
                                             err_r[rrows], k)
        parts_r[j] = []
    return lr, rl


def topk_search(query: np.ndarray, base: np.ndarray, k: int, *, block: int = 4096,
                backend: str = "auto", base_offset: int = 0) -> TopK:
    """Per query row, the k base rows with the largest inner product (PSQE 4.2, 4.2.2, 4.3).

    scores[i, r] = c(i, ids[i, r] - base_offset), the canonical float32 inner product (module
    docstring), ordered by score descending then id ascending; exact, not approximate.

    Args:
        query: (n, d) float32 (other real dtypes are cast to float32).
        base: (m, d) float32 (likewise).
        k: neighbours per row, >= 0.
        block: rows per query block and per base block; peak extra memory is about
            ``4 * block**2`` bytes (the score tile) plus ``O(n * k)``.
        backend: "numpy" (blocked BLAS matmul, chunk-max shortlist), "faiss" (one exact
            ``faiss.IndexFlatIP`` per base block), "auto" (faiss if importable, else numpy).
            The backend changes speed only, never the output.
        base_offset: added to base row indices in ``ids``; lets shards of one base report
            global ids (ties are broken on these ids).

    Returns:
        scores (n, k) float32 and ids (n, k) int64.  When fewer than k base rows exist the
        tail is padded with score -inf and id -1.

    Raises:
        ValueError: bad shapes, k < 0, block < 1, base_offset < 0, inf/nan inputs, or norms so
            large that a float32 inner product could overflow.
    """
    query = _as_matrix(query, "query")
    base = _as_matrix(base, "base")
    k, block, base_offset = int(k), int(block), int(base_offset)
    if query.shape[1] != base.shape[1]:
        raise ValueError(f"query has d={query.shape[1]}, base has d={base.shape[1]}")
    if k < 0 or block < 1 or base_offset < 0:
        raise ValueError(f"need k >= 0, block >= 1, base_offset >= 0; got {k}, {block}, "
                         f"{base_offset}")
    backend = _resolve_backend(backend)
    n, d = query.shape
    m = base.shape[0]
    scores, ids = empty_topk(n, k)
    if n == 0 or m == 0 or k == 0:
        return scores, ids

    qnorm = _row_norms(query, "query")
    bnorm = _row_norms(base, "base")
    g, tiny = _error_terms(d, qnorm, bnorm)

    # Zero query rows score exactly 0 against everything: the k smallest ids win.
    live_q = np.flatnonzero(qnorm > 0)
    zero_q = np.flatnonzero(qnorm == 0)
    if zero_q.size:
        kz = min(k, m)
        scores[zero_q, :kz] = 0.0
        ids[zero_q, :kz] = base_offset + np.arange(kz)
    if live_q.size == 0:
        return scores, ids
    # Zero base rows beyond the first k tie at 0 with k smaller-id zero rows: never selected.
    zero_b = bnorm == 0
    usable = ~zero_b | (np.cumsum(zero_b) <= k)
    all_live = live_q.size == n

    # E's base factor over the whole base, so one bound serves every block (module docstring)
    err_scale = g * float(bnorm[usable].max())
    for q0 in range(0, live_q.size, block):
        qrows = live_q[q0:q0 + block]
        qb = query[q0:q0 + block] if all_live else query[qrows]
        err = err_scale * qnorm[qrows] + tiny
        floor = np.full(qrows.size, -np.inf, np.float32)
        parts, bcols, alike = [], [], False
        for b0 in range(0, m, block):
            b1 = min(m, b0 + block)
            cols_global = b0 + np.flatnonzero(usable[b0:b1])
            if cols_global.size == 0:
                continue
            bcols.append(cols_global)
            if alike:
                continue
            bb = base[b0:b1] if cols_global.size == b1 - b0 else base[cols_global]
            if backend == "faiss":
                index = faiss.IndexFlatIP(d)
                index.add(bb)
                got = _shortlist_faiss(index, qb, bb.shape[0], k, floor, err,
                                       give_up=_BAND_LIMIT * k)
                del index
                if got is None:
                    alike = True
                    continue
                r, c, a, kth = got
            else:
                r, c, a, kth = _shortlist_numpy(qb, bb, k, floor, err)
            parts.append((r, cols_global[c], a))
            floor = np.maximum(floor, kth)  # a block's k-th bounds the whole base's k-th
            alike = r.size > _BAND_LIMIT * k * qrows.size
        if alike:
            parts = []
            scores[qrows], ids[qrows] = _topk_tiles(query, base, qrows, bcols, qnorm, bnorm, k,
                                                    base_offset)
        else:
            scores[qrows], ids[qrows] = _finish(query, base, qrows, parts, floor, err, k,
                                                base_offset)
    return scores, ids
