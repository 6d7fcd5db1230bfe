"""The device-generic (CUDA) path of the GAT kernels and the training loops, run on the CPU.

``kernels.KERNELS = "torch"`` makes CPU tensors take the code the GPU takes (``index_add``
aggregation, ``torch.sparse.mm`` for sparse inputs); it must compute the same function, with the
same gradients, as the custom CPU kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.nn import GATConv

from psqe_ray.config import AlignConfig, Stage2Config
from psqe_ray.core import kernels
from psqe_ray.core.kernels import Adjacency, gat_untransformed, sparse_linear
from psqe_ray.core.train import cpu_state, resolve_device, train_encoder


@pytest.fixture
def torch_kernels():
    old = kernels.KERNELS
    kernels.KERNELS = "torch"
    yield
    kernels.KERNELS = old


def both(fn):
    """fn() under the CPU kernels and under the device-generic kernels."""
    old = kernels.KERNELS
    try:
        kernels.KERNELS = "auto"
        a = fn()
        kernels.KERNELS = "torch"
        b = fn()
    finally:
        kernels.KERNELS = old
    return a, b


def test_aggregation_and_sparse_inputs_agree_with_gradients():
    rng = np.random.default_rng(0)
    n_src, n_dst, d = 40, 15, 6
    edges = np.vstack([rng.integers(0, n_src, 120), rng.integers(0, n_dst, 120)])
    adj = Adjacency(edges, n_src, n_dst)
    torch.manual_seed(0)
    conv = GATConv(d, 4, heads=2, concat=True, add_self_loops=False)
    x0 = torch.randn(n_src, d)
    f = sp.random(50, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    w0 = torch.randn(5, 30)
    rows = np.array([3, 7, 7, 0, 49])

    def run():
        conv.zero_grad()
        x = x0.clone().requires_grad_(True)
        w = w0.clone().requires_grad_(True)
        y = gat_untransformed(conv, x, adj, conv.lin.weight)
        z = sparse_linear(f, rows, w, None)
        (y.square().sum() + z.sin().sum()).backward()
        return (y.detach(), z.detach(), x.grad, w.grad, conv.att_src.grad.clone(),
                conv.lin.weight.grad.clone())

    cpu, generic = both(run)
    for a, b in zip(cpu, generic):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_adjacency_moves_and_stays_put():
    adj = Adjacency(np.array([[0, 1], [1, 0]]), 2, 2)
    assert adj.to("cpu") is adj
    assert adj.to(torch.device("meta")).src.device.type == "meta"


def tiny_graph(rng, n=60):
    heads = rng.integers(0, n, 200)
    tails = rng.integers(0, n, 200)
    a = sp.coo_matrix((np.ones(400), (np.r_[heads, tails], np.r_[tails, heads])), shape=(n, n))
    a = a.tocsr()
    a.data[:] = 1
    return a.indptr.astype(np.int64), a.indices.astype(np.int64)


def test_stage2_training_on_the_generic_path_matches_the_cpu_kernels():
    rng = np.random.default_rng(1)
    graph = tiny_graph(rng)
    feats = {"name": sp.random(60, 20, density=0.2, format="csr", random_state=2,
                               dtype=np.float32),
             "relation": torch.from_numpy(rng.standard_normal((60, 8)).astype(np.float32))}
    seeds = np.arange(0, 12), np.arange(0, 12)
    cfg = Stage2Config(epochs=4, dim=8, batch_size=6)

    def run():
        model, losses = train_encoder(feats, graph, seeds[0], seeds[1], 30, "name", cfg, 3)
        return losses, cpu_state(model.state_dict())

    (l1, s1), (l2, s2) = both(run)
    np.testing.assert_allclose(l1, l2, rtol=1e-4)
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=1e-3, atol=1e-4)


def test_aligner_on_the_generic_path_matches_the_cpu_kernels():
    from psqe_ray.align.trainer import Aligner

    rng = np.random.default_rng(2)
    graph = tiny_graph(rng)
    feats = {"name": sp.random(60, 20, density=0.2, format="csr", random_state=3,
                               dtype=np.float32)}
    cfg = AlignConfig(recipe="eva", epochs=3, round_epochs=1, rounds=1, dim=8, batch_size=8)

    def run():
        a = Aligner(cfg, 5).fit(feats, graph, 30, np.arange(10), np.arange(10))
        return a.losses_, a.embeddings_[0]

    (l1, e1), (l2, e2) = both(run)
    np.testing.assert_allclose(l1, l2, rtol=1e-4)
    np.testing.assert_allclose(e1, e2, rtol=1e-3, atol=1e-4)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_cpu_state_copies_nested_tensors():
    state = {"a": torch.ones(2, requires_grad=True), "b": [torch.zeros(1), 3], "c": "x"}
    out = cpu_state(state)
    assert not out["a"].requires_grad and out["b"][1] == 3 and out["c"] == "x"
