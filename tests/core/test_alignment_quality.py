"""Alignment metrics on hand-made vectors with known ranks, and against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.core.alignment_quality import alignment_metrics, csls_penalty, field_split, gold_ranks
from psqe_ray.core.fusion import l2_normalize


def _brute_ranks(q, c, qi, ti, csls_k=0):
    s = (q.astype(np.float64) @ c.astype(np.float64).T)
    if csls_k:
        r_q = np.sort(s, axis=1)[:, ::-1][:, :csls_k].mean(axis=1)
        r_c = np.sort(s.T, axis=1)[:, ::-1][:, :csls_k].mean(axis=1)
        s = 2 * s - r_q[:, None] - r_c[None, :]
    out = []
    for a, b in zip(qi, ti):
        row = s[a]
        out.append(1 + int((row > row[b] + 1e-9).sum())
                   + int(((np.abs(row - row[b]) <= 1e-9) & (np.arange(len(row)) < b)).sum()))
    return np.array(out)


def test_known_ranks():
    left = np.eye(3, dtype=np.float32)
    right = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], np.float32)
    # query 0 -> partner 0 (rank 1); query 1 -> partner 1: right 1 scores .6, right 0 scores 0 ->
    # rank 1; query 0 -> partner 1 would be rank 2 (right 0 scores 1 > .8)
    assert gold_ranks(left, right, [0, 1, 2, 0], [0, 1, 2, 1]).tolist() == [1, 1, 1, 2]
    m = alignment_metrics(left, right, np.array([0, 1, 2]), np.array([0, 1, 2]), csls_k=1)
    assert m["hits@1"] == 1.0 and m["mrr"] == 1.0
    # right -> left: right 1 = (.8, .6, 0) is closer to left 0 than to left 1: rank 2
    assert m["variants"]["r2l/plain/all"]["hits@1"] == pytest.approx(2 / 3)
    assert m["variants"]["r2l/plain/all"]["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_ties_go_to_the_smaller_id():
    left = np.array([[1, 0]], np.float32)
    right = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    assert gold_ranks(left, right, [0, 0, 0], [0, 1, 2]).tolist() == [1, 2, 3]


@pytest.mark.parametrize("csls_k", [0, 3])
def test_blocked_ranks_match_brute_force(csls_k):
    rng = np.random.default_rng(7)
    base = rng.standard_normal((400, 16)).astype(np.float32)
    left = l2_normalize(base[:300] + 0.8 * rng.standard_normal((300, 16)).astype(np.float32))
    right = l2_normalize(base[:350] + 0.8 * rng.standard_normal((350, 16)).astype(np.float32))
    qi = rng.permutation(300)[:200]
    ti = qi.copy()
    got = gold_ranks(left, right, qi, ti, csls_k=csls_k, block=37)
    assert (got > 1).any() and (got == 1).any()  # a case with real ranking work
    assert got.tolist() == _brute_ranks(left, right, qi, ti, csls_k).tolist()


def test_csls_demotes_a_hub():
    # right 2 (a hub, the partner of left 2) beats the partners of left 0 and left 1 on plain
    # cosine; CSLS subtracts each candidate's best similarity to the other graph, and the hub's
    # (1.0, with its own partner) is larger than the partners' (.67)
    left = l2_normalize(np.array([[1, 0.05], [0.05, 1], [1, 1]], np.float32))
    right = l2_normalize(np.array([[1, -1], [-1, 1], [1, 1]], np.float32))
    plain = gold_ranks(left, right, [0, 1, 2], [0, 1, 2])
    csls = gold_ranks(left, right, [0, 1, 2], [0, 1, 2], csls_k=1)
    assert plain.tolist() == [2, 2, 1] and csls.tolist() == [1, 1, 1]
    assert csls_penalty(right, left, 1)[2] > csls_penalty(right, left, 1)[0]


def test_field_split_is_the_seeded_last_70_percent():
    a, b = field_split(1000, seed=1), field_split(1000, seed=1)
    assert len(a) == 700 and a.tolist() == b.tolist() and len(set(a.tolist())) == 700
    assert a.tolist() != field_split(1000, seed=2).tolist()
    m = alignment_metrics(np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32),
                          np.arange(4), np.arange(4))
    assert m["variants"]["l2r/csls/test"]["pairs"] == 3 and m["hits@10"] == 1.0


def test_test_split_ranks_among_test_entities_only():
    # a right entity outside the test pairs that beats every partner: it lowers "all" ranks
    # but is no candidate under the field's protocol
    rng = np.random.default_rng(0)
    n = 40
    left = np.abs(rng.normal(size=(n, 8))).astype(np.float32)
    left /= np.linalg.norm(left, axis=1, keepdims=True)
    hub = np.full((1, 8), 100.0, np.float32)  # right id n: nobody's partner, everyone's best
    right = np.concatenate([left + 0.01, hub]).astype(np.float32)
    gl, gr = np.arange(n), np.arange(n)
    m = alignment_metrics(left, right, gl, gr, split_seed=3)
    test = field_split(n, seed=3)
    brute = []
    for i in test:
        s = left[i] @ right[gr[test]].T
        brute.append(1 + int((s > s[list(test).index(i)]).sum()))
    brute = np.asarray(brute)
    assert m["variants"]["l2r/plain/test"]["hits@1"] == pytest.approx((brute == 1).mean())
    assert m["variants"]["l2r/plain/test"]["pairs"] == len(test)
    full = gold_ranks(left, right, gl, gr)
    assert (full >= 1).all() and m["variants"]["l2r/plain/all"]["hits@1"] == pytest.approx((full == 1).mean())
    assert m["variants"]["l2r/plain/all"]["hits@1"] == 0.0
    assert m["variants"]["l2r/plain/test"]["hits@1"] > 0.5


def test_every_variant_matches_brute_force():
    # all eight variants at once (each CSLS penalty searched once per candidate set and shared
    # by both directions) against per-variant brute force; unequal sides, partial gold
    rng = np.random.default_rng(11)
    base = rng.standard_normal((260, 12)).astype(np.float32)
    left = l2_normalize(base[:200] + 0.9 * rng.standard_normal((200, 12)).astype(np.float32))
    right = l2_normalize(base[40:260] + 0.9 * rng.standard_normal((220, 12)).astype(np.float32))
    gl = rng.permutation(np.arange(40, 200))[:120]
    gr = gl - 40
    m = alignment_metrics(left, right, gl, gr, csls_k=3, split_seed=5)
    test = field_split(len(gl), seed=5)
    local = np.arange(len(test))
    for name, (lv, rv, li, ri) in {"all": (left, right, gl, gr),
                                   "test": (left[gl[test]], right[gr[test]], local, local)}.items():
        for direction, (q, c, qi, ti) in {"l2r": (lv, rv, li, ri),
                                          "r2l": (rv, lv, ri, li)}.items():
            for scoring, k in (("plain", 0), ("csls", 3)):
                rank = _brute_ranks(q, c, qi, ti, k)
                got = m["variants"][f"{direction}/{scoring}/{name}"]
                assert got["pairs"] == len(rank)
                assert got["hits@1"] == pytest.approx((rank == 1).mean())
                assert got["mrr"] == pytest.approx((1.0 / rank).mean())
    assert 0 < m["variants"]["r2l/csls/all"]["hits@1"] < 1
    assert m["variants"]["r2l/csls/all"] != m["variants"]["r2l/plain/all"]


def _reference_ranks(query, cand, q_ids, t_ids, pens, bounds):
    """The rank rule written out whole: better = s > hi, or lo <= s <= hi at an earlier id."""
    out = []
    raw = query[q_ids] @ cand.T
    for pen, (hi, lo) in zip(pens, bounds):
        s = raw if pen is None else 2.0 * raw - pen[0][:, None] - pen[1][None, :]
        earlier = np.arange(len(cand))[None, :] < t_ids[:, None]
        better = (s > hi[:, None]) | ((s >= lo[:, None]) & earlier)
        out.append(1 + better.sum(axis=1))
    return out


@pytest.mark.parametrize("block", [5, 16, 64])
def test_tiled_ranks_count_ties_like_the_whole_rule(block):
    """The tiles compare twice and look at the tie band only where one holds more than the
    partner: duplicated rows (exact ties at earlier and later ids), both scorings, blocks
    that cut through the partners, equal the rule applied to the whole score matrix."""
    from psqe_ray.core import alignment_quality as aq

    rng = np.random.default_rng(3)
    base = l2_normalize(rng.standard_normal((12, 8)).astype(np.float32))
    right = base[rng.integers(0, 12, 60)]            # many exact duplicates
    left = base[rng.integers(0, 12, 40)]
    qi = np.arange(40)
    ti = rng.integers(0, 60, 40)
    pens = [None, (rng.random(40) * 0.1, rng.random(60) * 0.1)]
    got = aq._exact_ranks(left, right, qi, ti, pens, block)
    bounds = aq._rank_bounds(left, right, qi, ti, pens)  # the bounds the function uses
    want = _reference_ranks(left, right, qi, ti, pens, bounds)
    for g, w in zip(got, want):
        assert g.tolist() == w.tolist()
    assert any((g > 1).any() for g in got)
    # ties at earlier ids really occur (the duplicates), so the band path is exercised
    dup_earlier = [(right[:t] == right[t]).all(axis=1).any() for t in ti]
    assert any(dup_earlier)
