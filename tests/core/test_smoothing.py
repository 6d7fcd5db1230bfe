"""Neighbourhood smoothing of the aligner's output (psqe_ray.core.smoothing)."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.core.smoothing import smooth
from psqe_ray.core.train import joint_graph


def _csr(n: int, edges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    nbrs = [[] for _ in range(n)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    indptr = np.cumsum([0] + [len(x) for x in nbrs]).astype(np.int64)
    return indptr, np.array([j for x in nbrs for j in sorted(x)], np.int64)


def test_hops_are_normalised_neighbourhood_means():
    # path 0 - 1 - 2, node 3 alone
    x = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 5.0]], np.float32)
    out = smooth(x, _csr(4, [(0, 1), (1, 2)]), hops=2)
    s = 1 / np.sqrt(3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert out.shape == (4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :2], unit * s, rtol=1e-6)
    hop1 = np.array([[0.0, 2.0], [2.0, 0.5], [0.0, 2.0], [0.0, 0.0]])  # means of neighbours
    norm1 = np.linalg.norm(hop1, axis=1, keepdims=True)
    np.testing.assert_allclose(out[:, 2:4], np.where(norm1 > 0, hop1 / np.maximum(norm1, 1e-9), 0) * s,
                               rtol=1e-6)
    hop2 = np.array([[2.0, 0.5], [0.0, 2.0], [2.0, 0.5], [0.0, 0.0]])  # means of hop 1
    norm2 = np.linalg.norm(hop2, axis=1, keepdims=True)
    np.testing.assert_allclose(out[:, 4:], np.where(norm2 > 0, hop2 / np.maximum(norm2, 1e-9), 0) * s,
                               rtol=1e-6)
    assert out[3, 2:].tolist() == [0.0] * 4  # no neighbours: zero hop blocks
    assert np.all(np.abs(out @ out.T) <= 1 + 1e-6)  # inner products stay cosines


def test_zero_hops_is_the_input_normalised_and_chunks_do_not_matter():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    graph = _csr(50, [(int(a), int(b)) for a, b in rng.integers(0, 50, (120, 2)) if a != b])
    np.testing.assert_allclose(smooth(x, graph, 0), x / np.linalg.norm(x, axis=1, keepdims=True),
                               rtol=1e-6)
    assert np.array_equal(smooth(x, graph, 2, chunk=7), smooth(x, graph, 2))
    with pytest.raises(ValueError, match="hops"):
        smooth(x, graph, -1)
    with pytest.raises(ValueError, match="rows"):
        smooth(x[:10], graph, 1)


def test_neighbours_tell_apart_entities_whose_own_vectors_tie():
    """Two left entities with the same own vector (two people called 'John Smith') and their
    partners on the right: without smoothing the tie cannot be broken; the neighbourhood means
    (one lives in Paris, the other in Rome) rank each one's true partner first."""
    paris, rome, smith = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    # left: 0 smith-a, 1 smith-b, 2 paris, 3 rome; right: the same, in another order
    left = np.array([smith, smith, paris, rome], np.float32)
    right = np.array([rome, smith, paris, smith], np.float32)  # 1 = smith-b, 3 = smith-a
    adj_l = _csr(4, [(0, 2), (1, 3)])
    adj_r = _csr(4, [(3, 2), (1, 0)])
    graph = joint_graph(adj_l, adj_r, 4)
    plain = np.vstack([left, right])
    for hops, solved in ((0, False), (1, True), (2, True)):
        out = smooth(plain, graph, hops)
        scores = out[:4] @ out[4:].T
        best = scores.argmax(1)
        assert (best[0] == 3 and best[1] == 1 and scores[0, 3] > scores[0, 1]) == solved, (hops, scores)
