"""Row blocks: any cut of the rows gives the same fill, the same K-means labels."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.core.blocks import (chunk_stats, fill_block, fill_stats, kmeans, row_ranges,
                                  take_rows)

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
