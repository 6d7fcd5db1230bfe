"""Blocked exact top-k: brute-force oracle, bit-identity across blocks/backends/shards, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from psqe_ray.core.topk import (canonical_scores, empty_topk, merge_topk, topk_search,
                                topk_search_both)

BACKENDS = ["numpy", "faiss"]


def brute_force(query: np.ndarray, base: np.ndarray, k: int, offset: int = 0):
    """Full n x m matrix in float64, rounded once to float32; rows by (score desc, id asc)."""
    n, m = query.shape[0], base.shape[0]
    full = (query.astype(np.float64) @ base.astype(np.float64).T).astype(np.float32) + np.float32(0)
    ids = np.broadcast_to(np.arange(m, dtype=np.int64) + offset, (n, m))
    order = np.lexsort((ids, -full), axis=1)[:, :k]
    scores, out_ids = empty_topk(n, k)
    kk = min(k, m)
    scores[:, :kk] = np.take_along_axis(full, order, axis=1)
    out_ids[:, :kk] = np.take_along_axis(ids, order, axis=1)
    return scores, out_ids


def assert_same(got, want):
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64


def integer_vectors(rng, rows, d, low=-2, high=3):
    """Small integers: every inner product is exact in float32, so ties are exact and common."""
    return rng.integers(low, high, (rows, d)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,m,d,k", [(50, 70, 8, 5), (33, 7, 4, 10), (0, 5, 3, 2), (5, 0, 3, 2),
                                     (6, 9, 3, 0), (80, 1000, 5, 20), (1, 1, 1, 1)])
@pytest.mark.parametrize("kind", ["float", "integer"])
def test_matches_brute_force(backend, n, m, d, k, kind):
    rng = np.random.default_rng([n, m, d, k])
    if kind == "integer":
        query, base = integer_vectors(rng, n, d), integer_vectors(rng, m, d)
    else:
        query = rng.standard_normal((n, d)).astype(np.float32)
        base = rng.standard_normal((m, d)).astype(np.float32)
    want = brute_force(query, base, k)
    # Every faiss call opens an OpenMP region, which costs ~10 ms on a busy 2-core machine:
    # keep the number of (query block, base block) tiles small there.
    tiny = 3 if backend == "numpy" else 11
    for block in ((tiny, 64, 4096) if n * m <= 5000 else (29, 256, 4096)):
        got = topk_search(query, base, k, block=block, backend=backend)
        assert got[0].shape == got[1].shape == (n, k)
        assert_same(got, want)


def test_ties_break_by_smaller_id_and_pad():
    base = np.array([[1, 0], [2, 0], [1, 0], [2, 0], [0, 5]], np.float32)
    query = np.array([[1, 0], [0, 0], [-1, 0]], np.float32)
    for backend in BACKENDS:
        scores, ids = topk_search(query, base, 7, block=2, backend=backend)
        np.testing.assert_array_equal(ids, [[1, 3, 0, 2, 4, -1, -1],
                                            [0, 1, 2, 3, 4, -1, -1],
                                            [4, 0, 2, 1, 3, -1, -1]])
        np.testing.assert_array_equal(scores[0], [2, 2, 1, 1, 0, -np.inf, -np.inf])
        np.testing.assert_array_equal(scores[2], [0, -1, -1, -2, -2, -np.inf, -np.inf])
        # -1 * 0 is -0.0 in IEEE arithmetic; canonical scores fold it into +0.0
        assert not np.signbit(scores[1, :5]).any() and not np.signbit(scores[2, 0])


def test_base_offset_shifts_ids_only():
    rng = np.random.default_rng(3)
    query, base = integer_vectors(rng, 20, 4), integer_vectors(rng, 30, 4)
    plain = topk_search(query, base, 6, backend="numpy")
    shifted = topk_search(query, base, 6, backend="numpy", base_offset=1000)
    np.testing.assert_array_equal(shifted[0], plain[0])
    np.testing.assert_array_equal(shifted[1], plain[1] + 1000)
    assert_same(shifted, brute_force(query, base, 6, offset=1000))


def test_zero_vectors_on_both_sides():
    # Missing-modality zero vectors: zero queries, and more zero base rows than k.
    rng = np.random.default_rng(4)
    query = rng.standard_normal((40, 6)).astype(np.float32)
    base = rng.standard_normal((300, 6)).astype(np.float32)
    query[::5] = 0
    base[rng.random(300) < 0.5] = 0
    query[1] = -np.abs(query[1])
    base[base.any(axis=1)] = np.abs(base[base.any(axis=1)])  # query 1 scores <= 0 except zeros
    want = brute_force(query, base, 8)
    for backend in BACKENDS:
        for block in (16, 4096):
            assert_same(topk_search(query, base, 8, block=block, backend=backend), want)
    zero_ids = np.flatnonzero(~base.any(axis=1))[:8]
    np.testing.assert_array_equal(want[1][1], zero_ids)  # the oracle agrees with the premise


def near_duplicates(rng, m, d):
    """Base rows equal up to a few ulps per entry: fast float32 kernels disagree on their order."""
    v = rng.standard_normal(d).astype(np.float32)
    bits = np.repeat(v[None], m, axis=0).view(np.int32) + rng.integers(-3, 4, (m, d), np.int32)
    return bits.view(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_ties_match_oracle(backend):
    rng = np.random.default_rng(5)
    base = near_duplicates(rng, 600, 48)
    query = base[:30] + rng.standard_normal((30, 48)).astype(np.float32) * np.float32(1e-3)
    want = brute_force(query, base, 10)
    for block in (29, 100, 4096):
        assert_same(topk_search(query, base, 10, block=block, backend=backend), want)


def test_identical_across_blocks_and_backends():
    rng = np.random.default_rng(6)
    query = rng.standard_normal((300, 24)).astype(np.float32)
    base = np.concatenate([rng.standard_normal((1500, 24)), integer_vectors(rng, 500, 24)])
    base = base.astype(np.float32)
    ref = topk_search(query, base, 12, block=4096, backend="numpy")
    for backend in BACKENDS:
        for block in (97, 256, 999, 5000):
            assert_same(topk_search(query, base, 12, block=block, backend=backend), ref)
    assert_same(topk_search(query, base, 12, backend="auto"), ref)


def fold(parts, k, order):
    acc = parts[order[0]]
    for i in order[1:]:
        acc = merge_topk(acc, parts[i], k)
    return acc


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_merged_in_any_order_equal_unsharded(backend):
    rng = np.random.default_rng(7)
    query = np.concatenate([rng.standard_normal((60, 16)), integer_vectors(rng, 40, 16)])
    base = np.concatenate([rng.standard_normal((500, 16)), integer_vectors(rng, 300, 16)])
    query, base = query.astype(np.float32), base[rng.permutation(800)].astype(np.float32)
    k = 9
    whole = topk_search(query, base, k, backend="numpy")
    for split in range(4):
        cuts = np.sort(rng.choice(np.arange(1, 800), size=split + 1, replace=False))
        bounds = np.concatenate([[0], cuts, [800]])
        parts = [topk_search(query, base[a:b], k, block=64 + 31 * i, backend=backend,
                             base_offset=int(a))
                 for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
        orders = [list(range(len(parts))), list(range(len(parts)))[::-1],
                  list(rng.permutation(len(parts)))]
        for order in orders:
            assert_same(fold(parts, k, order), whole)
        if len(parts) >= 3:  # a balanced tree, not a fold
            left = merge_topk(parts[0], parts[1], k)
            right = parts[2]
            for p in parts[3:]:
                right = merge_topk(p, right, k)
            assert_same(merge_topk(right, left, k), whole)


def test_merge_is_idempotent_and_pads():
    a = (np.array([[3.0, 1.0, -np.inf]], np.float32), np.array([[7, 2, -1]]))
    b = (np.array([[3.0, 2.0]], np.float32), np.array([[5, 9]]))
    merged = merge_topk(a, b, 5)
    np.testing.assert_array_equal(merged[1], [[5, 7, 9, 2, -1]])
    np.testing.assert_array_equal(merged[0], [[3, 3, 2, 1, -np.inf]])
    assert_same(merge_topk(merged, merged, 5), merged)
    assert_same(merge_topk(b, a, 5), merged)
    assert merge_topk(a, b, 0)[1].shape == (1, 0)
    with pytest.raises(ValueError):
        merge_topk(a, (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64)), 3)


def reference_merge(a, b, k):
    """Row by row in plain Python: the union with an id's best score, (score desc, id asc)."""
    n = a[0].shape[0]
    out = empty_topk(n, k)
    for r in range(n):
        best = {}
        for s, i in (a, b):
            for score, idx in zip(s[r].tolist(), i[r].tolist()):
                if idx >= 0 and (idx not in best or score > best[idx]):
                    best[idx] = score
        ranked = sorted(best.items(), key=lambda t: (-t[1], t[0]))[:k]
        for c, (idx, score) in enumerate(ranked):
            out[0][r, c], out[1][r, c] = score, idx
    return out


@pytest.mark.parametrize("seed", range(6))
def test_merge_matches_a_plain_reference(seed):
    """Ties, an id in both inputs with different scores, padding, real -inf scores, -0.0 and
    ids past 32 bits: the fast paths of merge_topk agree with the definition."""
    rng = np.random.default_rng(seed)
    n, ka, kb = 40, int(rng.integers(1, 8)), int(rng.integers(1, 8))
    span = [10, 10 ** 6, 2 ** 40][seed % 3]

    def side(width):
        s = np.round(rng.standard_normal((n, width)), 1).astype(np.float32)
        s[rng.random((n, width)) < 0.05] = -0.0
        s[rng.random((n, width)) < 0.03] = -np.inf
        i = rng.integers(0, span, (n, width))
        i[rng.random((n, width)) < 0.1] = -1
        s[i < 0] = -np.inf
        return s, i

    a, b = side(ka), side(kb)
    for k in (0, 1, 3, ka + kb, ka + kb + 2):
        assert_same(merge_topk(a, b, k), reference_merge(a, b, k))


@pytest.mark.parametrize("n,m,d,k,block", [(70, 50, 8, 5, 16), (33, 90, 4, 1, 7), (64, 64, 6, 3, 64),
                                           (20, 9, 5, 12, 4), (1, 1, 1, 1, 1), (0, 5, 3, 2, 8),
                                           (40, 30, 3, 0, 8), (300, 260, 5, 2, 128)])
@pytest.mark.parametrize("kind", ["float", "integer"])
def test_both_directions_in_one_pass_equal_two_searches(n, m, d, k, block, kind):
    rng = np.random.default_rng(n * 1000 + m + k)
    if kind == "integer":  # exact ties everywhere: the id order decides
        left, right = integer_vectors(rng, n, d), integer_vectors(rng, m, d)
        left[np.abs(left).sum(axis=1) == 0, 0] = 1.0  # all-zero rows take the other path
        right[np.abs(right).sum(axis=1) == 0, 0] = 1.0
    else:
        left = rng.standard_normal((n, d)).astype(np.float32)
        right = rng.standard_normal((m, d)).astype(np.float32)
    seen = []
    lr, rl = topk_search_both(left, right, k, block=block,
                              on_block=lambda done, total: seen.append((done, total)))
    assert_same(lr, brute_force(left, right, k))
    assert_same(rl, brute_force(right, left, k))
    assert_same(lr, topk_search(left, right, k, block=block))
    assert_same(rl, topk_search(right, left, k, block=block))
    assert seen[-1][0] == seen[-1][1] == -(-n // block)


def test_both_directions_with_zero_rows_fall_back_to_two_searches():
    rng = np.random.default_rng(3)
    left = rng.standard_normal((30, 4)).astype(np.float32)
    right = rng.standard_normal((25, 4)).astype(np.float32)
    left[[2, 7]] = 0.0
    right[5] = 0.0
    lr, rl = topk_search_both(left, right, 4, block=8)
    assert_same(lr, topk_search(left, right, 4))
    assert_same(rl, topk_search(right, left, 4))
    with pytest.raises(ValueError):
        topk_search_both(left, right[:, :3], 2)


def test_canonical_scores_do_not_depend_on_batch():
    rng = np.random.default_rng(8)
    query = rng.standard_normal((50, 300)).astype(np.float32)
    base = rng.standard_normal((70, 300)).astype(np.float32)
    rows = rng.integers(0, 50, 5000)
    cols = rng.integers(0, 70, 5000)
    together = canonical_scores(query, base, rows, cols)
    alone = np.array([canonical_scores(query, base, rows[i:i + 1], cols[i:i + 1])[0]
                      for i in range(0, 5000, 97)])
    np.testing.assert_array_equal(together[::97], alone)
    exact = np.array([np.float32(np.add.reduce(query[r].astype(np.float64) * base[c]))
                      for r, c in zip(rows[:50], cols[:50])])
    np.testing.assert_array_equal(together[:50], exact)


def test_large_search_is_blocked_in_memory():
    n = m = 20_000
    d, k, block = 32, 10, 2048
    rng = np.random.default_rng(9)
    query = rng.standard_normal((n, d), dtype=np.float32)
    base = rng.standard_normal((m, d), dtype=np.float32)
    tracemalloc.start()
    try:
        scores, ids = topk_search(query, base, k, block=block, backend="numpy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * m * 4 / 20, f"peak {peak / 2**20:.0f} MiB suggests an n x m allocation"
    rows = rng.choice(n, 25, replace=False)
    assert_same((scores[rows], ids[rows]), brute_force(query[rows], base, k))


def test_rejects_bad_input():
    q = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        topk_search(q, np.zeros((3, 5), np.float32), 2)
    with pytest.raises(ValueError):
        topk_search(q, np.full((3, 4), np.nan, np.float32), 2)
    with pytest.raises(ValueError):
        topk_search(q, q, -1)
    with pytest.raises(ValueError):
        topk_search(q, q, 2, block=0)
    with pytest.raises(ValueError):
        topk_search(q, q, 2, backend="annoy")
    with pytest.raises(ValueError):
        topk_search(np.full((1, 4), 1e20, np.float32), np.full((1, 4), 1e20, np.float32), 1)


def cone(rng, rows, d, spread, scale=1.0):
    """Unit vectors (times ``scale``) around one direction, ``spread`` apart: float32 cannot
    order their inner products, so the search takes its float64-tile path."""
    c = rng.standard_normal(d)
    x = c + spread * rng.standard_normal((rows, d))
    return (scale * x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "cone", "cone-large", "integer", "near-duplicates",
                                  "tiny"])
def test_canonical_tile_equals_canonical_scores(kind):
    from psqe_ray.core.topk import _canonical_tile

    rng = np.random.default_rng(["random", "cone", "cone-large", "integer", "near-duplicates",
                                 "tiny"].index(kind))
    n, m, d = 60, 70, 48
    if kind == "random":
        q, b = (rng.standard_normal((r, d)).astype(np.float32) for r in (n, m))
    elif kind == "cone":
        q, b = cone(rng, n, d, 1e-4), cone(rng, m, d, 1e-4)
    elif kind == "cone-large":
        q, b = cone(rng, n, d, 1e-3, 1e6), cone(rng, m, d, 1e-3, 1e-3)
    elif kind == "integer":
        q, b = integer_vectors(rng, n, d), integer_vectors(rng, m, d)
    elif kind == "near-duplicates":
        b = near_duplicates(rng, m, d)
        q = near_duplicates(rng, n, d)
    else:  # products near the float32 subnormal range
        q = (rng.standard_normal((n, d)) * 1e-20).astype(np.float32)
        b = (rng.standard_normal((m, d)) * 1e-20).astype(np.float32)
    norm = lambda x: np.sqrt(np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64)))
    r, c = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(m), indexing="ij"))
    want = canonical_scores(q, b, r, c).reshape(n, m)
    got = _canonical_tile(q, b, norm(q), norm(b))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_sums_near_a_float32_rounding_midpoint_are_flagged():
    """The tile path's test for sums that another summation order may round differently."""
    from psqe_ray.core.topk import _near_midpoint

    one = 1.0
    mid = one + 2.0 ** -24  # halfway between 1 and the next float32
    v = np.array([mid, mid + 2.0 ** -40, mid - 2.0 ** -40, one + 2.0 ** -30, one - 2.0 ** -26,
                  one + 2.0 ** -25, -mid, 0.5, 0.0])
    f = v.astype(np.float32)
    got = _near_midpoint(v, f, np.full(v.size, 2.0 ** -35))
    # 0.0 is within the bound of its midpoints with the smallest subnormals
    assert got.tolist() == [True, True, True, False, False, False, True, False, True]
    assert not _near_midpoint(v[:1] + 2.0 ** -30, (v[:1] + 2.0 ** -30).astype(np.float32),
                              np.full(1, 2.0 ** -35)).any()


def test_canonical_tile_rescores_a_sum_on_a_rounding_midpoint():
    """1 + 2^-24 lies halfway between two float32 numbers and rounds to even (1.0)."""
    from psqe_ray.core.topk import _canonical_tile

    q = np.array([[1.0, 2.0 ** -24], [1.0, 3 * 2.0 ** -24]], np.float32)
    b = np.array([[1.0, 1.0]], np.float32)
    norm = lambda x: np.sqrt((x.astype(np.float64) ** 2).sum(axis=1))
    got = _canonical_tile(q, b, norm(q), norm(b))
    assert got[0, 0] == np.float32(1.0)
    assert got[1, 0] == np.float32(1.0 + 2.0 ** -22)  # 1 + 3 * 2^-24: ties to even, upwards
    np.testing.assert_array_equal(got[:, 0], canonical_scores(q, b, np.arange(2), np.zeros(2, int)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_vectors_float32_cannot_order_match_brute_force(backend, scale):
    """A narrow cone: every pair is inside the float32 error band, so each query block goes to
    float64 tiles instead of rescoring all n x m pairs; the answer is the same."""
    rng = np.random.default_rng(int(scale))
    left, right = cone(rng, 300, 40, 1e-4, scale), cone(rng, 260, 40, 1e-4, scale)
    for k, block in ((10, 64), (3, 4096), (40, 100)):
        want = brute_force(left, right, k)
        assert_same(topk_search(left, right, k, block=block, backend=backend), want)
    lr, rl = topk_search_both(left, right, 5, block=64)
    assert_same(lr, brute_force(left, right, 5))
    assert_same(rl, brute_force(right, left, 5))


def test_tile_path_rescores_only_pairs_that_can_reach_the_top_k(monkeypatch):
    """Sparse count bags: most scores are exactly zero, and the error bound is larger than
    float32's spacing there, so every zero pair is "near a midpoint".  The tile path must give
    the brute-force answer while rescoring only pairs that can reach a row's top k."""
    import psqe_ray.core.topk as topk

    rng = np.random.default_rng(7)
    bags = [(rng.random((n, 60)) < 0.15) * rng.integers(1, 4, (n, 60)) for n in (200, 230)]
    left, right = ((b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1)
                    ).astype(np.float32) for b in bags)
    rescored = []
    real = topk.canonical_scores

    def counted(q, b, r, c):
        rescored.append(len(r))
        return real(q, b, r, c)

    monkeypatch.setattr(topk, "_BAND_LIMIT", 0)  # every block takes the tile path
    monkeypatch.setattr(topk, "canonical_scores", counted)
    for k in (1, 5, 40):
        rescored.clear()
        assert_same(topk_search(left, right, k, block=64), brute_force(left, right, k))
        assert sum(rescored) < 0.2 * left.shape[0] * right.shape[0]
