"""The one-to-one final alignment on the sparse candidate graph (psqe_ray.core.assignment)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from psqe_ray.core.alignment_quality import alignment_metrics
from psqe_ray.core.assignment import (balanced_ranking, candidate_graph, csls_ranking, match,
                                      match_metrics, rerank_metrics, sinkhorn)


def _lists(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of every row of a dense score matrix (ties: smaller id)."""
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, 1).astype(np.float32), order.astype(np.int64)


def _graph(s: np.ndarray, k: int, csls_k: int = 3):
    return candidate_graph(_lists(s, k), _lists(s.T.copy(), k), csls_k)


def _dense_sinkhorn(z: np.ndarray, iterations: int) -> np.ndarray:
    w = np.exp(z - z.max(axis=1, keepdims=True))
    for _ in range(iterations):
        w /= w.sum(axis=1, keepdims=True)
        w /= w.sum(axis=0, keepdims=True)
    return w


def test_candidate_graph_is_the_union_of_both_lists_with_csls():
    rng = np.random.default_rng(0)
    s = rng.random((7, 9)).astype(np.float32)
    g = _graph(s, 2, csls_k=2)
    lr, rl = _lists(s, 2), _lists(s.T.copy(), 2)
    want = {(i, int(j)) for i in range(7) for j in lr[1][i]} | \
        {(int(i), j) for j in range(9) for i in rl[1][j]}
    assert set(zip(g.left.tolist(), g.right.tolist())) == want
    assert len(g.left) == len(want)  # each pair once
    r_l = np.sort(s, axis=1)[:, ::-1][:, :2].mean(axis=1)
    r_r = np.sort(s, axis=0)[::-1][:2].mean(axis=0)
    np.testing.assert_allclose(g.score, s[g.left, g.right], rtol=1e-6)
    np.testing.assert_allclose(g.csls, 2 * s[g.left, g.right] - r_l[g.left] - r_r[g.right],
                               rtol=1e-5)


def test_sinkhorn_on_all_edges_equals_the_dense_balancing():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 6)).astype(np.float32).astype(np.float64)  # the lists' scores
    g = _graph(s, 6, csls_k=0)  # every pair a candidate, csls == 2 s
    w = sinkhorn(g, temperature=0.5, iterations=7)
    dense = _dense_sinkhorn(2 * s / 0.5, 7)
    np.testing.assert_allclose(w, dense[g.left, g.right], rtol=1e-10)
    np.testing.assert_allclose(np.bincount(g.right, w), 1.0)


def test_csls_penalties_do_not_change_the_balanced_limit():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(8, 8))
    plain, adjusted = _graph(s, 8, csls_k=0), _graph(s, 8, csls_k=3)
    np.testing.assert_allclose(sinkhorn(plain, 0.6, 2000), sinkhorn(adjusted, 0.6, 2000),
                               rtol=1e-6, atol=1e-12)


def test_balancing_resolves_a_hub_that_ranking_gets_wrong():
    # right 0 is every left entity's first choice; left 1 holds it most strongly
    s = np.array([[0.90, 0.85, 0.10],
                  [0.95, 0.50, 0.20],
                  [0.80, 0.30, 0.70]])
    gold = (np.array([0, 1, 2]), np.array([1, 0, 2]))
    g = _graph(s, 3, csls_k=0)
    raw = rerank_metrics(g, g.score, *gold)
    balanced = rerank_metrics(g, sinkhorn(g, 0.04, 10), *gold)
    assert raw["hits@1"] == pytest.approx(1 / 3)  # only left 1 ranks its partner first
    assert balanced["hits@1"] == 1.0 and balanced["mrr"] == 1.0
    m = match(g)
    assert sorted(zip(m.left.tolist(), m.right.tolist())) == [(0, 1), (1, 0), (2, 2)]


def test_csls_ranking_demotes_a_hub_that_plain_ranking_puts_first():
    # right 0 is a hub: every left entity's nearest.  Its penalty (mean of its 2 best) is high,
    # so left 0 and left 2, whose partners are close behind, rank their partners first
    s = np.array([[0.90, 0.85, 0.10],
                  [0.95, 0.50, 0.20],
                  [0.80, 0.30, 0.75]])
    scores, ids, sim = csls_ranking(_lists(s, 3), _lists(s.T.copy(), 3), 2, csls_k=2)
    assert ids[:, 0].tolist() == [1, 0, 2]  # plain: [0, 0, 0]
    r_l, r_r = (np.sort(s, axis=1)[:, ::-1][:, :2].mean(axis=1),
                np.sort(s, axis=0)[::-1][:2].mean(axis=0))
    np.testing.assert_allclose(scores, np.take_along_axis(
        2 * s - r_l[:, None] - r_r[None, :], ids, 1), atol=1e-6)
    np.testing.assert_allclose(sim, np.take_along_axis(s, ids, 1), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_csls_ranking_on_full_lists_is_the_evaluations_csls_ranking():
    # every candidate listed: rank 1 of the table is the exact CSLS best, so the table's
    # Hits@1 is alignment_metrics' CSLS headline (ties would go to the smaller id in both)
    rng = np.random.default_rng(5)
    left = rng.normal(size=(40, 8)).astype(np.float32)
    right = np.concatenate([left + 0.9 * rng.normal(size=(40, 8)).astype(np.float32),
                            rng.normal(size=(12, 8)).astype(np.float32)])
    right[40:] += 2 * left.mean(axis=0)  # dangling hubs near everybody
    s = left @ right.T
    _, ids, _ = csls_ranking(_lists(s, 52), _lists(s.T.copy(), 40), 10, csls_k=3)
    gold = np.arange(40)
    v = alignment_metrics(left, right, gold, gold)["variants"]
    m, plain = v["l2r/csls/all"], v["l2r/plain/all"]
    assert m["hits@1"] == pytest.approx((ids[:, 0] == gold).mean())
    assert m["hits@10"] == pytest.approx((ids == gold[:, None]).any(axis=1).mean())
    assert m["hits@1"] > plain["hits@1"]  # the hubs took plain rank 1 from some partners


def test_balanced_ranking_is_what_rerank_metrics_measures():
    rng = np.random.default_rng(6)
    s = rng.normal(size=(30, 34))
    s[np.arange(30), np.arange(30)] += 1.5  # gold: i -> i; right 30..33 dangling
    s[:, 30] += 1.2  # a hub
    g = _graph(s, 5)
    share = sinkhorn(g)
    scores, ids, sim = balanced_ranking(g, share, 10)
    gold = np.arange(30)
    want = rerank_metrics(g, share, gold, gold)
    assert want["hits@1"] == pytest.approx((ids[:, 0] == gold).mean())
    assert want["hits@10"] == pytest.approx((ids == gold[:, None]).any(axis=1).mean())
    assert want["hits@1"] > (np.argmax(s, axis=1) == gold).mean()  # the hub lost its hold
    for i in range(30):  # each row: that entity's candidate edges, best share first
        e = np.flatnonzero(g.left == i)
        e = e[np.lexsort((g.right[e], -share[e]))][:10]
        n = len(e)
        assert ids[i, :n].tolist() == g.right[e].tolist() and (ids[i, n:] == -1).all()
        np.testing.assert_allclose(scores[i, :n], share[e], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sim[i, :n], g.score[e], rtol=1e-6)
        assert np.isneginf(scores[i, n:]).all()


def test_csls_ranking_pads_short_lists_last():
    s = np.array([[0.9, 0.1], [0.2, 0.8]])
    lr = (np.array([[0.9, -np.inf], [0.8, 0.2]], np.float32), np.array([[0, -1], [1, 0]]))
    scores, ids, sim = csls_ranking(lr, _lists(s.T.copy(), 2), 2, csls_k=1)
    assert ids.tolist() == [[0, -1], [1, 0]]
    assert np.isneginf(scores[0, 1]) and np.isneginf(sim[0, 1]) and np.isfinite(scores[1]).all()
    with pytest.raises(ValueError, match="outside"):
        csls_ranking((lr[0], np.array([[0, 5], [1, 0]])), _lists(s.T.copy(), 2), 2)


def test_a_clear_permutation_is_matched_like_the_optimal_assignment():
    rng = np.random.default_rng(3)
    n = 200
    perm = rng.permutation(n)
    s = rng.uniform(-0.2, 0.2, size=(n, n))
    s[np.arange(n), perm] += 0.5  # partners in [0.3, 0.7], the rest below 0.2
    g = _graph(s, 10)
    m = match(g)
    rows, cols = linear_sum_assignment(-s)
    assert dict(zip(m.left.tolist(), m.right.tolist())) == dict(zip(rows.tolist(), cols.tolist()))
    scores = match_metrics(m, np.arange(n), perm)
    assert scores == {**scores, "precision": 1.0, "recall": 1.0, "f1": 1.0, "matches": n,
                      "unjudged": 0}


def test_dangling_entities_are_left_out():
    # left 0..2 have partners; left 3 is as close to every right entity as to any other
    s = np.array([[0.9, 0.1, 0.1],
                  [0.1, 0.9, 0.1],
                  [0.1, 0.1, 0.9],
                  [0.5, 0.5, 0.5]])
    m = match(_graph(s, 3))
    assert sorted(zip(m.left.tolist(), m.right.tolist())) == [(0, 0), (1, 1), (2, 2)]
    # greedy fallback: a pair that is not mutual-best is left out as dangling
    s2 = np.array([[0.9, 0.2], [0.8, 0.1]])  # left 1's best is taken, right 1's best is left 0
    g = _graph(s2, 2, csls_k=0)
    greedy = match(g, method="greedy")
    assert list(zip(greedy.left.tolist(), greedy.right.tolist())) == [(0, 0)]
    assert greedy.dropped == 1
    with pytest.raises(ValueError, match="sinkhorn or greedy"):
        match(g, method="hungarian")


def test_match_metrics_count_unjudged_pairs_apart():
    from psqe_ray.core.assignment import MatchResult
    m = MatchResult(np.array([0, 1, 2, 5]), np.array([0, 2, 1, 7]), np.ones(4), np.ones(4),
                    "sinkhorn", 10, 0, np.ones(10))
    out = match_metrics(m, np.array([0, 1, 3]), np.array([0, 1, 3]))
    # (0, 0) right; (1, 2) and (2, 1) judged wrong (left 1 / right 1 are gold); (5, 7) unjudged
    assert out["correct"] == 1 and out["judged"] == 3 and out["unjudged"] == 1
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(1 / 3) and out["precision_all"] == 0.25


def test_partners_outside_the_candidates_are_misses_in_the_reranking():
    s = np.eye(5) + 0.01 * np.arange(25).reshape(5, 5)
    g = _graph(s, 1, csls_k=0)
    out = rerank_metrics(g, g.score, np.array([0, 1]), np.array([0, 3]))
    assert out["hits@1"] == 0.5 and out["listed"] == 0.5 and out["mrr"] == 0.5


def test_ties_and_empty_inputs_are_deterministic():
    s = np.ones((4, 4))
    a, b = match(_graph(s, 4)), match(_graph(s, 4))
    assert a.left.tolist() == b.left.tolist() and a.right.tolist() == b.right.tolist()
    empty = candidate_graph((np.zeros((3, 0), np.float32), np.zeros((3, 0), np.int64)),
                            (np.zeros((2, 0), np.float32), np.zeros((2, 0), np.int64)))
    m = match(empty)
    assert m.left.size == 0 and m.candidates == 0
