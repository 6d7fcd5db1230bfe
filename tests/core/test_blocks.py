"""Row blocks: any cut of the rows gives the same fill, the same K-means labels; sparse (CSR)
blocks give the numbers of dense ones."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from psqe_ray.core.blocks import (chunk_stats, compact, dense, fill_block, fill_stats,
                                  fuse_rows, kmeans, prepare_rows, row_ranges, stack, take_rows)
from psqe_ray.core.features import bag_block, name_features, name_rows
from psqe_ray.core.fusion import fuse
from psqe_ray.core.train import block_model_input

CHUNK = 16  # small chunks so that tiny arrays span several


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cut(x, sizes):
    out, a = [], 0
    for s in sizes:
        out.append(x[a:a + s])
        a += s
    assert a == len(x)
    return out


def test_row_ranges_are_whole_chunks():
    assert row_ranges(100, 30, CHUNK) == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert row_ranges(0, 30, CHUNK) == [(0, 0)]
    with pytest.raises(ValueError, match="chunk boundary"):
        chunk_stats(np.zeros((4, 2), np.float32), np.ones(4, bool), 3, CHUNK)


def test_fill_is_the_same_for_any_block_cut():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((70, 5)).astype(np.float32)
    present = rng.random(70) > 0.3
    x[~present] = 0
    whole = fill_stats([chunk_stats(x, present, 0, CHUNK)])
    cut = fill_stats([chunk_stats(b, present[a:a + len(b)], a, CHUNK)
                      for a, b in zip((0, 32, 48), _cut(x, (32, 16, 22)))])
    assert all(np.array_equal(u, v) for u, v in zip(whole, cut))
    assert np.allclose(whole[0], x[present].mean(axis=0), atol=1e-6)
    assert np.allclose(whole[1], x[present].std(axis=0), atol=1e-5)
    one = fill_block(x, present, 0, whole, 7, "image", 0, CHUNK)
    parts = np.concatenate([fill_block(b, present[a:a + len(b)], a, whole, 7, "image", 0, CHUNK)
                            for a, b in zip((0, 32, 48), _cut(x, (32, 16, 22)))])
    assert np.array_equal(one, parts)
    assert np.array_equal(one[present], x[present]) and (one[~present] != 0).any(axis=1).all()
    # another modality, side or seed draws other rows
    assert not np.array_equal(one, fill_block(x, present, 0, whole, 7, "image", 1, CHUNK))
    assert not np.array_equal(one, fill_block(x, present, 0, whole, 8, "image", 0, CHUNK))


def test_kmeans_finds_separated_clusters_for_any_block_cut():
    rng = np.random.default_rng(2)
    centres = _unit(rng, 4, 8)
    truth = rng.integers(0, 4, 200)
    x = centres[truth] + 0.05 * rng.standard_normal((200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    left, right = x[:120], x[120:]
    a = kmeans([left, right], 4, iters=10, seed=3, chunk=CHUNK)
    b = kmeans(_cut(left, (48, 64, 8)) + _cut(right, (16, 64)), 4, iters=10, seed=3, chunk=CHUNK)
    assert np.array_equal(a, b)
    # the clusters are the planted ones (up to the label names)
    assert len({(int(t), int(l)) for t, l in zip(truth, a)}) == 4
    assert kmeans([left], 1, chunk=CHUNK).tolist() == [0] * 120


def test_take_rows_across_blocks():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    rows = np.array([9, 0, 4, 5])
    assert np.array_equal(take_rows(_cut(x, (3, 2, 5)), rows), x[rows])


# ---- sparse blocks: stored as CSR, the same numbers as dense --------------------------------
def _sparse_pair(rng, n=90, d=40, per_row=3):
    """A bag-like (n, d) float32 matrix, dense and CSR; a few rows empty."""
    x = np.zeros((n, d), np.float32)
    for i in range(n):
        if i % 9:
            x[i, rng.choice(d, per_row, replace=False)] = rng.integers(1, 4, per_row)
    return x, sp.csr_matrix(x)


def test_compact_picks_csr_only_when_sparse():
    rng = np.random.default_rng(2)
    x, s = _sparse_pair(rng)
    assert sp.issparse(compact(x)) and sp.issparse(compact(s))
    full = rng.standard_normal((10, 4)).astype(np.float32)
    assert isinstance(compact(full), np.ndarray)
    assert isinstance(compact(sp.csr_matrix(full)), np.ndarray)
    assert np.array_equal(dense(compact(x)), x)
    explicit = sp.csr_matrix((np.array([0.0, 2.0], np.float32), np.array([0, 1]),
                              np.array([0, 2, 2])), shape=(2, 30))
    assert compact(explicit).nnz == 1  # stored zeros dropped


def test_sparse_blocks_give_the_dense_numbers():
    """Fill + normalise, fusion, the fill statistics and K-means over CSR blocks equal the same
    steps over the dense matrices (dense chunks underneath), for any block cut."""
    rng = np.random.default_rng(3)
    x, s = _sparse_pair(rng)
    present = np.asarray(x.any(axis=1))
    st = fill_stats([chunk_stats(x, present, 0, CHUNK)])
    assert np.array_equal(chunk_stats(s, present, 0, CHUNK), chunk_stats(x, present, 0, CHUNK))
    img = _unit(rng, len(x), 6)
    ref = {"relation": prepare_rows(x, present, 0, None, 5, "relation", "left", CHUNK),
           "name": prepare_rows(x, present, 0, st, 5, "name", "left", CHUNK), "image": img}
    got_rel = [prepare_rows(s[a:b], present[a:b], a, None, 5, "relation", "left", CHUNK)
               for a, b in ((0, 32), (32, 90))]
    assert all(sp.issparse(g) for g in got_rel)  # bags stay sparse, filled names do not
    assert np.array_equal(dense(stack(got_rel)), dense(ref["relation"]))
    got_name = prepare_rows(s, present, 0, st, 5, "name", "left", CHUNK)
    assert np.array_equal(dense(got_name), dense(ref["name"]))
    weights = {"relation": 1.0, "name": 0.5, "image": 2.0}
    whole = fuse({m: dense(v) for m, v in ref.items()}, weights)
    parts = [fuse_rows({"relation": got_rel[i], "name": dense(got_name)[a:b], "image": img[a:b]},
                       weights, CHUNK) for i, (a, b) in enumerate(((0, 32), (32, 90)))]
    assert np.array_equal(dense(stack(parts)), whole)
    assert np.array_equal(kmeans([sp.csr_matrix(p) for p in parts], 4, iters=4, seed=1,
                                 chunk=CHUNK), kmeans([whole], 4, iters=4, seed=1, chunk=CHUNK))
    rows = np.array([89, 0, 33, 31])
    assert np.array_equal(take_rows([sp.csr_matrix(p) for p in parts], rows), whole[rows])


def test_bag_and_name_rows_are_csr_with_the_dense_values():
    rng = np.random.default_rng(4)
    ent, col = rng.integers(0, 50, 400), rng.integers(-1, 30, 400)
    x, present = bag_block(ent, col, 10, 40, 30)
    want = np.zeros((30, 30), np.float32)
    keep = (col >= 0) & (ent >= 10) & (ent < 40)
    np.add.at(want, (ent[keep] - 10, col[keep]), 1.0)
    assert sp.issparse(x) and np.array_equal(x.toarray(), want)
    assert np.array_equal(present, want.any(axis=1))
    names = ["Paris", None, "paris", "", "Zürich"]
    rows, p = name_rows(names)
    assert sp.issparse(rows) and np.array_equal(rows.toarray(), name_features(names)[0])
    assert p.tolist() == [True, False, True, False, True]


def test_block_model_input_equals_the_whole_matrix_input():
    rng = np.random.default_rng(5)
    x, s = _sparse_pair(rng)
    got = block_model_input([s[:32], x[32:64], s[64:]])
    assert sp.issparse(got) and (got != sp.csr_matrix(x)).nnz == 0
    d = rng.standard_normal((20, 3)).astype(np.float32)
    got = block_model_input([d[:8], sp.csr_matrix(d[8:])])
    assert isinstance(got, torch.Tensor) and torch.equal(got, torch.from_numpy(d))
