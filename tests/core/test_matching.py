"""Greedy one-to-one matching: hand-made answers, a naive reference, and candidate flattening."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.core.matching import candidates_from_topk, greedy_one_to_one
from psqe_ray.core.topk import topk_search


def naive_greedy(left, right, score, limit=None, taken_left=None, taken_right=None,
                 min_score=-np.inf):
    """The definition, in plain Python: stable sort by (score desc, left, right), then walk."""
    order = sorted(range(len(left)), key=lambda e: (-float(score[e]), int(left[e]), int(right[e])))
    used_l = set() if taken_left is None else set(np.flatnonzero(taken_left).tolist())
    used_r = set() if taken_right is None else set(np.flatnonzero(taken_right).tolist())
    out = []
    for e in order:
        if limit is not None and len(out) >= limit:
            break
        if float(score[e]) < min_score or left[e] in used_l or right[e] in used_r:
            continue
        used_l.add(left[e])
        used_r.add(right[e])
        out.append(e)
    return np.array(out, np.int64)


def edges(*triples):
    left, right, score = zip(*triples)
    return np.array(left, np.int64), np.array(right, np.int64), np.array(score, np.float32)


def test_best_first_never_reuses_an_entity():
    left, right, score = edges((0, 0, 0.9), (0, 1, 0.8), (1, 0, 0.7), (1, 1, 0.6), (2, 1, 0.5))
    got = greedy_one_to_one(left, right, score)
    np.testing.assert_array_equal(got, [0, 3])
    assert got.dtype == np.int64
    assert len(set(left[got])) == len(got) == len(set(right[got]))


def test_limit_and_min_score():
    left, right, score = edges((0, 0, 0.9), (1, 1, 0.6), (2, 2, 0.3), (3, 3, 0.8))
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score), [0, 3, 1, 2])
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score, limit=2), [0, 3])
    assert greedy_one_to_one(left, right, score, limit=0).size == 0
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score, min_score=0.6), [0, 3, 1])
    # compared in float64: 0.60000003 rounds to float32(0.6) yet lies above it
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score, min_score=0.60000003),
                                  [0, 3])


def test_taken_masks_are_respected_and_not_modified():
    left, right, score = edges((0, 0, 0.9), (1, 0, 0.7), (1, 1, 0.6), (2, 2, 0.5))
    taken_left = np.array([True, False, False])
    taken_right = np.array([False, False, True])
    got = greedy_one_to_one(left, right, score, taken_left=taken_left, taken_right=taken_right)
    np.testing.assert_array_equal(got, [1])
    np.testing.assert_array_equal(taken_left, [True, False, False])
    np.testing.assert_array_equal(taken_right, [False, False, True])
    with pytest.raises(ValueError):
        greedy_one_to_one(left, right, score, taken_left=np.zeros(2, bool))


def test_ties_break_by_smaller_left_then_right_then_index():
    left, right, score = edges((1, 1, 0.5), (1, 0, 0.5), (0, 1, 0.5))
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score), [2, 1])
    left, right, score = edges((1, 0, 0.5), (0, 1, 0.5), (0, 0, 0.5))
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score), [2])
    left, right, score = edges((1, 0, -0.0), (0, 1, 0.0))  # -0.0 == 0.0: left decides
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score), [1, 0])
    left, right, score = edges((0, 0, 0.5), (3, 3, 0.2), (0, 0, 0.5))  # duplicate edge
    np.testing.assert_array_equal(greedy_one_to_one(left, right, score), [0, 1])


def test_empty_and_invalid_input():
    empty = np.empty(0, np.int64)
    assert greedy_one_to_one(empty, empty, np.empty(0, np.float32)).size == 0
    left, right, score = edges((0, 0, 0.9), (1, 1, 0.6))
    with pytest.raises(ValueError):
        greedy_one_to_one(left, right, np.array([0.9, np.nan], np.float32))
    with pytest.raises(ValueError):
        greedy_one_to_one(np.array([0, -1]), right, score)
    with pytest.raises(ValueError):
        greedy_one_to_one(left, right[:1], score)
    with pytest.raises(ValueError):
        greedy_one_to_one(left, right, score, limit=-1)


@pytest.mark.parametrize("case", range(120))
def test_matches_naive_reference(case):
    rng = np.random.default_rng(case)
    e = int(rng.integers(0, 400))
    n_left, n_right = int(rng.integers(1, 60)), int(rng.integers(1, 60))
    left = rng.integers(0, n_left, e)
    right = rng.integers(0, n_right, e)
    if case % 2:  # few distinct scores: many exact ties
        score = rng.integers(0, 4, e).astype(np.float32) / 4
    else:
        score = rng.random(e).astype(np.float32)
    limit = None if case % 3 == 0 else int(rng.integers(0, 30))
    taken_left = rng.random(n_left + 3) < 0.2 if case % 4 == 0 else None
    taken_right = rng.random(n_right) < 0.2 if case % 5 == 0 else None
    min_score = 0.5 if case % 7 == 0 else -np.inf
    got = greedy_one_to_one(left, right, score, limit=limit, taken_left=taken_left,
                            taken_right=taken_right, min_score=min_score)
    np.testing.assert_array_equal(got, naive_greedy(left, right, score, limit, taken_left,
                                                    taken_right, min_score))


@pytest.mark.parametrize("limit", [None, 25_000])
def test_matches_naive_reference_at_scale(limit):
    # Enough edges for several vectorised rounds and, with a limit, several sorted prefixes.
    rng = np.random.default_rng(11)
    n, k = 30_000, 8
    left = np.repeat(np.arange(n), k)
    right = rng.integers(0, n, n * k)
    score = rng.integers(0, 1000, n * k).astype(np.float32)
    got = greedy_one_to_one(left, right, score, limit=limit)
    np.testing.assert_array_equal(got, naive_greedy(left, right, score, limit))


@pytest.mark.parametrize("mirrored", [False, True])
def test_chain_that_defeats_rounds_matches_reference(mirrored):
    # A path whose scores rise along it: each round finds one winner, so the sequential
    # fallback has to finish the job.  Mirrored, consecutive edges share a right entity
    # instead of a left one.
    m = 4_000
    left = np.arange(m) // 2
    right = (np.arange(m) + 1) // 2
    if mirrored:
        left, right = right, left
    score = np.arange(m, dtype=np.float32)
    got = greedy_one_to_one(left, right, score)
    np.testing.assert_array_equal(got, naive_greedy(left, right, score))


def test_result_does_not_depend_on_edge_order():
    rng = np.random.default_rng(12)
    left = rng.integers(0, 50, 600)
    right = rng.integers(0, 50, 600)
    score = rng.integers(0, 5, 600).astype(np.float32)
    pairs = {(int(left[i]), int(right[i])) for i in greedy_one_to_one(left, right, score)}
    perm = rng.permutation(600)
    got = greedy_one_to_one(left[perm], right[perm], score[perm])
    assert {(int(left[perm][i]), int(right[perm][i])) for i in got} == pairs


def test_candidates_from_topk_drops_padding():
    scores = np.array([[0.9, 0.5, -np.inf], [0.7, -np.inf, -np.inf]], np.float32)
    ids = np.array([[4, 2, -1], [3, -1, -1]], np.int64)
    left, right, score = candidates_from_topk(scores, ids)
    np.testing.assert_array_equal(left, [0, 0, 1])
    np.testing.assert_array_equal(right, [4, 2, 3])
    np.testing.assert_array_equal(score, np.array([0.9, 0.5, 0.7], np.float32))
    assert left.dtype == right.dtype == np.int64 and score.dtype == np.float32
    left, _, _ = candidates_from_topk(scores, ids, query_ids=np.array([10, 20]))
    np.testing.assert_array_equal(left, [10, 10, 20])
    with pytest.raises(ValueError):
        candidates_from_topk(scores, ids, query_ids=np.array([1]))
    empty = candidates_from_topk(np.empty((0, 3), np.float32), np.empty((0, 3), np.int64))
    assert all(a.size == 0 for a in empty)


def test_topk_then_greedy_recovers_a_planted_alignment():
    rng = np.random.default_rng(13)
    n, d = 2_000, 32
    right_vecs = rng.standard_normal((n, d)).astype(np.float32)
    truth = rng.permutation(n)  # left i is right truth[i]
    left_vecs = right_vecs[truth] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    left_ids = np.arange(n) + 5_000  # rows of the query map to their own entity ids
    l, r, s = candidates_from_topk(*topk_search(left_vecs, right_vecs, 5), query_ids=left_ids)
    got = greedy_one_to_one(l, r, s, limit=1_500)
    assert got.size == 1_500
    assert np.all(np.diff(s[got]) <= 0)
    np.testing.assert_array_equal(r[got], truth[l[got] - 5_000])
