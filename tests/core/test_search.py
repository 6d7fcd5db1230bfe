"""The search layer: plans by size, exact below the threshold, IVF above it with canonical scores,
shards merged in any order, approximate evaluation against exact counting."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.core.alignment_quality import alignment_metrics, gold_ranks
from psqe_ray.core.search import SCAN_ROWS, Searcher, ShardIndex, ivf_lists, ivf_probes
from psqe_ray.core.topk import canonical_scores, empty_topk, merge_topk, topk_search


def clustered(rng, n, d, centres=40, noise=0.35):
    c = rng.standard_normal((centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(got_ids, want_ids):
    return np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
                    for a, b in zip(got_ids, want_ids)])


def test_rule_and_plan_depend_on_size_only():
    assert ivf_lists(100) == 2 and ivf_lists(100_000) == 1265 and ivf_lists(1_000_000) == 4000
    assert ivf_probes(2, 78) == 2 and ivf_probes(100, 3900) == 16
    # an eighth of the lists up to the row budget (~130K rows), the budget above it
    assert ivf_probes(1265, 100_000) == 159
    assert ivf_probes(2530, 400_000) == 104 and ivf_probes(4000, 1_000_000) == 66
    for m in (100_000, 400_000, 1_000_000, 4_000_000):
        nl = ivf_lists(m)
        assert ivf_probes(nl, m) * m / nl <= SCAN_ROWS + m / nl  # rows scored per query
    s = Searcher(exact_below=1000, shard_rows=700)
    assert s.plan(1000).kind == "exact" and s.plan(1001).kind == "ivf"
    p = s.plan(2000)
    assert p.bounds == ((0, 666), (666, 1333), (1333, 2000))
    assert p.nlist == (17, 17, 17) and p.nprobe == (16, 16, 16)
    # exact plans split as asked (the Ray path: one shard per CPU); IVF plans ignore it
    assert len(s.plan(900, shards=4).bounds) == 4 and s.plan(2000, shards=8) == p
    assert Searcher(index="flat", exact_below=0).plan(10**6).kind == "exact"
    assert Searcher(index="ivf").plan(10).kind == "ivf"
    assert Searcher(exact_below=0, nlist=5, nprobe=9).plan(500).nprobe == (5,)
    with pytest.raises(ValueError, match="index"):
        Searcher(index="hnsw")


def test_exact_plan_is_the_exact_search_bit_for_bit():
    rng = np.random.default_rng(0)
    q, b = clustered(rng, 300, 16), clustered(rng, 500, 16)
    want = topk_search(q, b, 7)
    got = Searcher(exact_below=10_000).topk(q, b, 7)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("searcher,one_pass", [(Searcher(exact_below=10_000), True),
                                               (Searcher(exact_below=400, seed=3), False),
                                               (Searcher(index="ivf", seed=3), False)])
@pytest.mark.parametrize("k", [1, 7, 400])
def test_both_ways_equal_two_searches(searcher, one_pass, k):
    """One pass when both sides are searched exactly, two searches otherwise (an IVF side);
    either way the answers of two ``topk`` calls, bit for bit (k above one side's rows too)."""
    rng = np.random.default_rng(k)
    left, right = clustered(rng, 300, 16), clustered(rng, 500, 16)
    assert searcher.one_pass(len(left), len(right)) is one_pass
    lr, rl = searcher.topk_both(left, right, k)
    for got, want in zip((lr, rl), (searcher.topk(left, right, k), searcher.topk(right, left, k))):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_ivf_candidates_are_rescored_canonically_and_recall_is_high():
    rng = np.random.default_rng(1)
    q, b = clustered(rng, 2600, 32), clustered(rng, 6000, 32)
    want = topk_search(q, b, 10)
    s, ids = Searcher(index="ivf").topk(q, b, 10)
    # the bucketed (big-batch) search and the per-query search probe the same lists
    per_query = Searcher(index="ivf").topk(q[:300], b, 10)
    np.testing.assert_array_equal(per_query[1], ids[:300])
    rows = np.repeat(np.arange(len(q)), 10)
    np.testing.assert_array_equal(s.ravel(), canonical_scores(q, b, rows, ids.ravel()))
    # (score desc, id asc) within every row
    assert (np.diff(s, axis=1) <= 0).all()
    assert recall(ids, want[1]) >= 0.98
    # fewer probes can only lose neighbours, never invent scores
    s1, ids1 = Searcher(index="ivf", nprobe=1).topk(q, b, 10)
    assert recall(ids1, want[1]) < recall(ids, want[1])
    assert (s1 <= want[0][:, :1]).all()


def test_ivf_is_deterministic_and_shards_merge_in_any_order():
    rng = np.random.default_rng(2)
    q, b = clustered(rng, 500, 16), clustered(rng, 4000, 16)
    s = Searcher(index="ivf", shard_rows=1500, seed=3)
    plan = s.plan(len(b))
    assert len(plan.bounds) == 3
    parts = [s.shard(b, plan, i).search(q, 5) for i in range(3)]
    whole = s.topk(q, b, 5)
    for order in ((0, 1, 2), (2, 0, 1), (1, 2, 0)):
        merged = empty_topk(len(q), 5)
        for i in order:
            merged = merge_topk(merged, parts[i], 5)
        np.testing.assert_array_equal(merged[1], whole[1])
        np.testing.assert_array_equal(merged[0], whole[0])
    again = Searcher(index="ivf", shard_rows=1500, seed=3).topk(q, b, 5)
    np.testing.assert_array_equal(again[1], whole[1])
    # global ids: every shard's ids fall in its rows
    for (a, z), (_, ids) in zip(plan.bounds, parts):
        assert ((ids >= a) & (ids < z)).all()


def test_ivf_zero_queries_and_small_bases_follow_the_exact_rule():
    rng = np.random.default_rng(4)
    b = clustered(rng, 400, 8)
    q = clustered(rng, 5, 8)
    q[2] = 0.0
    s, ids = ShardIndex(b, 100, "ivf", nlist=4, nprobe=4).search(q, 3)
    assert (ids[2] == [100, 101, 102]).all() and (s[2] == 0).all()
    want = topk_search(q, b, 3, base_offset=100)  # all lists probed: exact
    np.testing.assert_array_equal(ids, want[1])
    # rescored from the index's own stored vectors: the canonical scores, the base held once
    np.testing.assert_array_equal(s, want[0])
    big = ShardIndex(b, 0, "ivf", nlist=4, nprobe=4)
    assert big.base is None
    many = clustered(rng, 3000, 8)  # the big-batch path, rescored in several slices
    got = big.search(many, 25)
    np.testing.assert_array_equal(got[0], topk_search(many, b, 25)[0])
    s, ids = ShardIndex(b[:2], 0, "ivf", nlist=1, nprobe=1).search(q, 5)
    assert ids.shape == (5, 2)
    with pytest.raises(ValueError, match="nan"):
        ShardIndex(b, 0, "ivf", nlist=4, nprobe=4).search(np.full((1, 8), np.nan, np.float32), 1)


@pytest.mark.parametrize("csls_k", [0, 3])
def test_approximate_ranks_match_exact_counting_within_depth(csls_k):
    rng = np.random.default_rng(5)
    left = clustered(rng, 1500, 24, noise=0.5)
    right = (left + 0.25 * rng.standard_normal(left.shape).astype(np.float32))
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    qi = np.arange(0, 1500, 3, dtype=np.int64)
    exact = gold_ranks(left, right, qi, qi, csls_k=csls_k)
    # every list probed: the shortlist holds the true top-depth, so ranks within it agree
    full = Searcher(index="ivf", nlist=8, nprobe=8, depth=20)
    approx = gold_ranks(left, right, qi, qi, csls_k=csls_k, searcher=full)
    inside = exact <= 20
    assert inside.mean() > 0.5
    if csls_k == 0:
        np.testing.assert_array_equal(approx[inside], exact[inside])
        assert (approx[~inside] == 21).all()
    else:  # CSLS re-ranks the plain shortlist: a lower bound, equal for the top of the list
        assert (approx <= np.maximum(exact, 1)).all()
        assert np.mean(approx[exact <= 10] == exact[exact <= 10]) > 0.95
    # the default rule on this data: Hits@1 and Hits@10 within 0.01 of exact
    rule = Searcher(index="ivf")
    approx = gold_ranks(left, right, qi, qi, csls_k=csls_k, searcher=rule)
    for k in (1, 10):
        assert abs(np.mean(approx <= k) - np.mean(exact <= k)) <= 0.01


def test_alignment_metrics_say_how_they_ranked():
    rng = np.random.default_rng(6)
    x = clustered(rng, 300, 8)
    gl = np.arange(300, dtype=np.int64)
    m = alignment_metrics(x, x, gl, gl)
    assert m["ranking"] == "exact" and m["hits@1"] == 1.0
    m = alignment_metrics(x, x, gl, gl, searcher=Searcher(index="ivf", depth=10))
    assert m["ranking"].startswith("approximate") and m["hits@1"] >= 0.98


def test_approximate_metrics_share_searches_and_agree_with_per_variant_ranks():
    from psqe_ray.core.alignment_quality import field_split

    rng = np.random.default_rng(7)
    left = clustered(rng, 900, 16, noise=0.5)
    right = left + 0.3 * rng.standard_normal(left.shape).astype(np.float32)
    right = np.concatenate([right, clustered(rng, 200, 16)])  # dangling right entities
    gl = np.arange(0, 900, 2, dtype=np.int64)
    s = Searcher(index="ivf", depth=15)
    m = alignment_metrics(left, right, gl, gl, searcher=s)
    test = field_split(len(gl))
    local = np.arange(len(test))
    for k, name in ((0, "plain"), (3, "csls")):
        want = gold_ranks(left, right, gl, gl, csls_k=k, searcher=s)
        assert m["variants"][f"l2r/{name}/all"]["hits@1"] == pytest.approx(np.mean(want <= 1))
        want = gold_ranks(right, left, gl, gl, csls_k=k, searcher=s)
        assert m["variants"][f"r2l/{name}/all"]["hits@10"] == pytest.approx(np.mean(want <= 10))
        want = gold_ranks(left[gl[test]], right[gl[test]], local, local, csls_k=k, searcher=s)
        assert m["variants"][f"l2r/{name}/test"]["mrr"] == pytest.approx(np.mean(1 / want))
