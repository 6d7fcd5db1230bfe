"""Seed-quality metrics on tiny hand-made graphs whose answers are worked out in the comments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from psqe_ray.core.seed_quality import (
    bucket_shares,
    cluster_shares,
    coverage_report,
    degree_buckets,
    distribution_gap,
    edge_coverage,
    entity_degree,
    seed_precision_recall,
)


def _a(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def _mask(n: int, *ids: int) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[list(ids)] = True
    return m


# ----------------------------------------------------------------------------- precision/recall


def test_precision_recall_hand_made():
    # seeds (0,0) (1,2) (2,1) (3,3); gold (0,0) (1,1) (2,2) (3,3) (4,4)
    # correct: (0,0) and (3,3) -> 2; precision 2/4; recall 2/5
    out = seed_precision_recall(_a(0, 1, 2, 3), _a(0, 2, 1, 3), _a(0, 1, 2, 3, 4), _a(0, 1, 2, 3, 4))
    assert out == {"count": 4, "correct": 2, "precision": 0.5, "recall": 0.4}


def test_precision_recall_pair_order_and_encoding_radix():
    # (1,2) is not (2,1): the pair is ordered (left, right).
    assert seed_precision_recall(_a(1), _a(2), _a(2), _a(1))["correct"] == 0
    # Seed (0,3) vs gold (1,0): a radix of 3 would encode both as 3; they must not match.
    assert seed_precision_recall(_a(0), _a(3), _a(1), _a(0))["correct"] == 0
    # And equal pairs do match whatever the id sizes.
    assert seed_precision_recall(_a(7), _a(123456), _a(7, 8), _a(123456, 0))["correct"] == 1


def test_precision_recall_empty_seeds_and_no_gold():
    # No seeds: precision undefined, recall 0 of 2 gold links.
    assert seed_precision_recall(_a(), _a(), _a(0, 1), _a(0, 1)) == {
        "count": 0, "correct": 0, "precision": None, "recall": 0.0}
    # No gold: recall undefined; 3 seeds, none correct.
    assert seed_precision_recall(_a(0, 1, 2), _a(2, 0, 1), _a(), _a()) == {
        "count": 3, "correct": 0, "precision": 0.0, "recall": None}
    assert seed_precision_recall(_a(), _a(), _a(), _a()) == {
        "count": 0, "correct": 0, "precision": None, "recall": None}


def test_precision_recall_duplicate_rows_count_once():
    # seeds {(0,0), (1,5)} with (0,0) twice; gold {(0,0), (2,2)} with (0,0) twice
    # correct 1 of 2 distinct seeds, 1 of 2 distinct gold links
    out = seed_precision_recall(_a(0, 0, 1), _a(0, 0, 5), _a(0, 0, 2), _a(0, 0, 2))
    assert out == {"count": 2, "correct": 1, "precision": 0.5, "recall": 0.5}


def test_precision_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        seed_precision_recall(_a(0, 1), _a(0), _a(0), _a(0))
    with pytest.raises(ValueError, match="negative"):
        seed_precision_recall(_a(-1), _a(0), _a(0), _a(0))
    with pytest.raises(TypeError, match="integer"):
        seed_precision_recall(np.array([0.0]), _a(0), _a(0), _a(0))


def test_precision_recall_one_million_pairs_vectorised():
    # gold: (i, perm[i]) for 1,000,000 i. Seeds: the same pairs, but the right ids of the last
    # 300,000 rotated by one place among themselves, so each of those is wrong (perm has no
    # repeats) while the seed set stays one-to-one. correct = 700,000; precision = recall = 0.7.
    n = 1_000_000
    perm = np.random.default_rng(0).permutation(n)
    left = np.arange(n)
    seed_right = perm.copy()
    seed_right[700_000:] = np.roll(perm[700_000:], 1)
    out = seed_precision_recall(left, seed_right, left, perm)
    assert out == {"count": n, "correct": 700_000, "precision": 0.7, "recall": 0.7}


# ----------------------------------------------------------------------------- edge coverage


PATH_H, PATH_T = _a(0, 1, 2, 3), _a(1, 2, 3, 4)  # path 0-1-2-3-4, four edges


@pytest.mark.parametrize("seeded, expected", [
    ((), 0.0),         # nothing seeded
    ((0,), 0.25),      # end node touches (0,1) only: 1/4
    ((2,), 0.5),       # middle node touches (1,2), (2,3): 2/4
    ((1, 2), 0.75),    # (0,1), (1,2), (2,3): 3/4; (1,2) counted once although both ends seeded
    ((1, 3), 1.0),     # every edge has an endpoint in {1, 3}
    ((0, 1, 2, 3, 4), 1.0),
])
def test_edge_coverage_path_graph(seeded, expected):
    assert edge_coverage(_mask(5, *seeded), PATH_H, PATH_T) == pytest.approx(expected)


def test_edge_coverage_self_loops_and_parallel_triples():
    # triples (0,0) self-loop, (0,1), (2,2) self-loop, (1,2) twice (two relations): m = 5
    h, t = _a(0, 0, 2, 1, 1), _a(0, 1, 2, 2, 2)
    assert edge_coverage(_mask(3, 0), h, t) == pytest.approx(2 / 5)   # (0,0), (0,1)
    assert edge_coverage(_mask(3, 2), h, t) == pytest.approx(3 / 5)   # (2,2), (1,2) x2
    assert edge_coverage(_mask(3, 0, 2), h, t) == pytest.approx(1.0)
    # degrees: 0 -> (0,0) once + (0,1) = 2; 1 -> (0,1) + (1,2) x2 = 3; 2 -> (2,2) once + 2 = 3
    assert entity_degree(3, h, t).tolist() == [2, 3, 3]


def test_edge_coverage_no_edges_and_bad_input():
    assert edge_coverage(_mask(3, 1), _a(), _a()) == 0.0
    with pytest.raises(TypeError, match="bool mask"):
        edge_coverage(_a(0, 1, 0), PATH_H, PATH_T)   # an id list is not a mask
    with pytest.raises(ValueError, match="out of range"):
        edge_coverage(_mask(4, 0), PATH_H, PATH_T)   # node 4 does not exist in a 4-node mask


# ----------------------------------------------------------------------------- degree buckets


@pytest.mark.parametrize("max_degree, expected", [
    (0, [(0, 0)]),
    (1, [(0, 0), (1, 1)]),
    (2, [(0, 0), (1, 1), (2, 3)]),
    (3, [(0, 0), (1, 1), (2, 3)]),
    (4, [(0, 0), (1, 1), (2, 3), (4, 7)]),
    (7, [(0, 0), (1, 1), (2, 3), (4, 7)]),
    (8, [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15)]),
    (16, [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31)]),
])
def test_degree_buckets_boundaries(max_degree, expected):
    # one entity of the maximal degree suffices; empty buckets in between are still listed
    assert degree_buckets(_a(0, max_degree)) == expected


def test_degree_buckets_empty_and_each_degree_in_its_bucket():
    assert degree_buckets(_a()) == [(0, 0)]
    # Brute force: every degree 0..5000 sits in exactly one bucket, the one whose bounds hold it.
    deg = np.arange(5001)
    rows = bucket_shares(np.ones(deg.size, dtype=bool), deg)
    bounds = degree_buckets(deg)
    assert len(bounds) == 14   # 4096 <= 5000 <= 8191 is bucket 13
    for (lo, hi), row in zip(bounds, rows):
        assert row["degrees"] == f"{lo}-{hi}"
        assert row["entities"] == min(hi, 5000) - lo + 1


def test_bucket_shares_hand_made():
    # degrees 0, 1, 1, 2, 3, 4, 7, 8; seeded entities 1, 4, 7 (degrees 1, 3, 8)
    # buckets 0-0: {0}; 1-1: {1,2}; 2-3: {3,4}; 4-7: {5,6}; 8-15: {7}
    rows = bucket_shares(_mask(8, 1, 4, 7), _a(0, 1, 1, 2, 3, 4, 7, 8))
    assert rows == [
        {"degrees": "0-0", "entities": 1, "entity_share": 1 / 8, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": 0.0},
        {"degrees": "1-1", "entities": 2, "entity_share": 2 / 8, "seeds": 1, "seed_share": 1 / 3,
         "seeded_fraction": 0.5},
        {"degrees": "2-3", "entities": 2, "entity_share": 2 / 8, "seeds": 1, "seed_share": 1 / 3,
         "seeded_fraction": 0.5},
        {"degrees": "4-7", "entities": 2, "entity_share": 2 / 8, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": 0.0},
        {"degrees": "8-15", "entities": 1, "entity_share": 1 / 8, "seeds": 1, "seed_share": 1 / 3,
         "seeded_fraction": 1.0},
    ]


def test_bucket_and_cluster_shares_sum_to_one():
    rng = np.random.default_rng(1)
    n = 10_000
    deg = rng.zipf(2.0, n).clip(max=10**6) - 1
    seeded = rng.random(n) < 0.1
    cluster = rng.integers(-3, 50, n)
    for rows in (bucket_shares(seeded, deg), cluster_shares(seeded, cluster)):
        assert sum(r["entities"] for r in rows) == n
        assert sum(r["seeds"] for r in rows) == int(seeded.sum())
        assert sum(r["entity_share"] for r in rows) == pytest.approx(1.0, abs=1e-12)
        assert sum(r["seed_share"] for r in rows) == pytest.approx(1.0, abs=1e-12)


def test_bucket_shares_no_seeds_gives_none_shares():
    rows = bucket_shares(np.zeros(3, dtype=bool), _a(0, 1, 4))
    assert [r["seed_share"] for r in rows] == [None, None, None, None]
    # bucket 2-3 is empty: its seeded fraction is undefined
    assert [r["seeded_fraction"] for r in rows] == [0.0, 0.0, None, 0.0]


def test_cluster_shares_hand_made():
    # clusters 5, 5, -1, 7, 7, 7; seeded 0, 3, 4 -> cluster -1: 1 entity, 0 seeds;
    # cluster 5: 2 entities, 1 seed; cluster 7: 3 entities, 2 seeds; ids in increasing order
    rows = cluster_shares(_mask(6, 0, 3, 4), _a(5, 5, -1, 7, 7, 7))
    assert rows == [
        {"cluster": -1, "entities": 1, "entity_share": 1 / 6, "seeds": 0, "seed_share": 0.0},
        {"cluster": 5, "entities": 2, "entity_share": 2 / 6, "seeds": 1, "seed_share": 1 / 3},
        {"cluster": 7, "entities": 3, "entity_share": 3 / 6, "seeds": 2, "seed_share": 2 / 3},
    ]
    # gap: 0.5 * (|0 - 1/6| + |1/3 - 1/3| + |2/3 - 1/2|) = 1/6
    gap = distribution_gap([r["seed_share"] for r in rows], [r["entity_share"] for r in rows])
    assert gap == pytest.approx(1 / 6)


# ----------------------------------------------------------------------------- distribution gap


def test_distribution_gap_identical_disjoint_and_between():
    assert distribution_gap([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert distribution_gap([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert distribution_gap([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]) == 1.0
    # 0.5 * (|1 - 0.5| + |0 - 0.5|) = 0.5
    assert distribution_gap([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.5)
    # shares that are thirds do not sum to exactly 1.0 in floating point, and are accepted
    assert distribution_gap([1 / 3] * 3, [1 / 3] * 3) == 0.0


def test_distribution_gap_rejects_non_distributions():
    with pytest.raises(ValueError, match="sum to 1"):
        distribution_gap([2, 0], [1, 1])          # counts, not shares
    with pytest.raises(ValueError, match="non-negative"):
        distribution_gap([1.5, -0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="differ in length"):
        distribution_gap([1.0], [0.5, 0.5])


# ----------------------------------------------------------------------------- coverage report


# Left graph, 6 entities: path 0-1-2-3-4, a self-loop on 0, entity 5 isolated.
#   triples (0,1) (1,2) (2,3) (3,4) (0,0); degrees 0:2 1:2 2:2 3:2 4:1 5:0
LEFT = (_a(0, 1, 2, 3, 0), _a(1, 2, 3, 4, 0))
# Right graph, 5 entities: star around 0 plus (1,2) and (3,1).
#   triples (0,1) (0,2) (0,3) (0,4) (1,2) (3,1); degrees 0:4 1:3 2:2 3:2 4:1
RIGHT = (_a(0, 0, 0, 0, 1, 3), _a(1, 2, 3, 4, 2, 1))
# Seeds (0,0) and (3,4): seeded left {0,3}, seeded right {0,4}.
SEED_L, SEED_R = _a(0, 3), _a(0, 4)


def test_coverage_report_end_to_end():
    rep = coverage_report(SEED_L, SEED_R, 6, 5, LEFT, RIGHT,
                          cluster_left=_a(0, 0, 0, 1, 1, 1), cluster_right=_a(2, 2, 9, 9, 9))
    assert rep["seeds"] == 2
    # left: (0,1) (2,3) (3,4) (0,0) touch {0,3}; (1,2) does not -> 4/5
    # right: the four star edges touch 0; (1,2), (3,1) do not -> 4/6
    assert rep["edge_coverage"] == pytest.approx(
        {"left": 4 / 5, "right": 4 / 6, "mean": (4 / 5 + 4 / 6) / 2})
    # 2 of 6 left entities, 2 of 5 right entities
    assert rep["entity_coverage"] == pytest.approx(
        {"left": 2 / 6, "right": 2 / 5, "mean": (2 / 6 + 2 / 5) / 2})
    # left buckets: 0-0 {5}; 1-1 {4}; 2-3 {0,1,2,3} holding both seeds
    assert rep["degree_buckets"]["left"] == [
        {"degrees": "0-0", "entities": 1, "entity_share": 1 / 6, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": 0.0},
        {"degrees": "1-1", "entities": 1, "entity_share": 1 / 6, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": 0.0},
        {"degrees": "2-3", "entities": 4, "entity_share": 4 / 6, "seeds": 2, "seed_share": 1.0,
         "seeded_fraction": 0.5},
    ]
    # right buckets: 0-0 empty; 1-1 {4} seeded; 2-3 {1,2,3}; 4-7 {0} seeded
    assert rep["degree_buckets"]["right"] == [
        {"degrees": "0-0", "entities": 0, "entity_share": 0.0, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": None},
        {"degrees": "1-1", "entities": 1, "entity_share": 1 / 5, "seeds": 1, "seed_share": 0.5,
         "seeded_fraction": 1.0},
        {"degrees": "2-3", "entities": 3, "entity_share": 3 / 5, "seeds": 0, "seed_share": 0.0,
         "seeded_fraction": 0.0},
        {"degrees": "4-7", "entities": 1, "entity_share": 1 / 5, "seeds": 1, "seed_share": 0.5,
         "seeded_fraction": 1.0},
    ]
    # left gap: 0.5 * (1/6 + 1/6 + |1 - 4/6|) = 1/3
    # right gap: 0.5 * (0 + |0.5 - 0.2| + |0 - 0.6| + |0.5 - 0.2|) = 0.6
    assert rep["degree_gap"] == pytest.approx({"left": 1 / 3, "right": 0.6, "mean": (1 / 3 + 0.6) / 2})
    # left clusters 0 {0,1,2} and 1 {3,4,5}, one seed each: gap 0
    # right clusters 2 {0,1} (seed 0) and 9 {2,3,4} (seed 4): 0.5 * (0.1 + 0.1) = 0.1
    assert rep["clusters"]["left"] == [
        {"cluster": 0, "entities": 3, "entity_share": 0.5, "seeds": 1, "seed_share": 0.5},
        {"cluster": 1, "entities": 3, "entity_share": 0.5, "seeds": 1, "seed_share": 0.5},
    ]
    assert rep["clusters"]["right"] == [
        {"cluster": 2, "entities": 2, "entity_share": 0.4, "seeds": 1, "seed_share": 0.5},
        {"cluster": 9, "entities": 3, "entity_share": 0.6, "seeds": 1, "seed_share": 0.5},
    ]
    assert rep["cluster_gap"] == pytest.approx({"left": 0.0, "right": 0.1, "mean": 0.05})
    # straight into report.json: no numpy scalars, no NaN
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep


def test_coverage_report_without_clusters_and_without_seeds():
    rep = coverage_report(SEED_L, SEED_R, 6, 5, LEFT, RIGHT)
    assert "clusters" not in rep and "cluster_gap" not in rep
    empty = coverage_report(_a(), _a(), 6, 5, LEFT, RIGHT)
    assert empty["seeds"] == 0
    assert empty["edge_coverage"] == {"left": 0.0, "right": 0.0, "mean": 0.0}
    assert empty["entity_coverage"] == {"left": 0.0, "right": 0.0, "mean": 0.0}
    # no seeds: the seed distribution, hence the gap, is undefined
    assert empty["degree_gap"] == {"left": None, "right": None, "mean": None}
    json.dumps(empty, allow_nan=False)


def test_coverage_report_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        coverage_report(_a(6), _a(0), 6, 5, LEFT, RIGHT)
    with pytest.raises(ValueError, match="both sides"):
        coverage_report(SEED_L, SEED_R, 6, 5, LEFT, RIGHT, cluster_left=_a(0, 0, 0, 0, 0, 0))


def test_coverage_report_ring_of_one_million():
    # Ring of n = 1,000,000 entities on both sides, edges (i, i+1 mod n); seeds every 4th entity.
    # Edges (4k-1, 4k) and (4k, 4k+1) are covered, (4k+1, 4k+2) and (4k+2, 4k+3) are not: 1/2.
    n = 1_000_000
    heads = np.arange(n)
    tails = (heads + 1) % n
    seeds = np.arange(0, n, 4)
    rep = coverage_report(seeds, seeds, n, n, (heads, tails), (heads, tails))
    assert rep["edge_coverage"]["mean"] == pytest.approx(0.5)
    assert rep["entity_coverage"]["mean"] == pytest.approx(0.25)
    # every entity has degree 2: one bucket 2-3 holds all entities and all seeds -> gap 0
    assert rep["degree_gap"]["mean"] == 0.0


def test_judged_precision_ignores_seeds_gold_cannot_judge():
    from psqe_ray.core.seed_quality import judged_precision

    gold_l, gold_r = np.array([0, 1, 2]), np.array([10, 11, 12])
    # (0,10) right; (1,12) wrong and judgeable; (5,15) touches no gold entity; (6,11) judgeable
    out = judged_precision([0, 1, 5, 6], [10, 12, 15, 11], gold_l, gold_r)
    assert out == {"judged": 3, "precision": 1 / 3}
    assert judged_precision([5], [15], gold_l, gold_r) == {"judged": 0, "precision": None}
