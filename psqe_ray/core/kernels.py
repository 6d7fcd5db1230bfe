"""The GAT's message passing over sampled blocks, and sparse input products: CPU and GPU kernels.

Each function computes the same thing as PyG's ``GATConv`` / ``nn.Linear`` (tested against
them) in a cheaper order or with custom CPU kernels (a CSR aggregation without an (E x d)
intermediate, a threaded scipy backward for sparse inputs).  ``KERNELS = "torch"`` makes CPU
tensors take the device-generic code that CUDA tensors take, so the GPU path is tested on CPU.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch_geometric.nn import GATConv


class Adjacency:
    """One block's edges in CSR order (by destination, then source), with the transpose.

    ``edge_index`` int64 (2, E) of (source position, destination position); duplicates are
    kept (a multi-edge is two messages, as in GATConv).  Every per-edge tensor of the layer is
    laid out in this order (``src``, ``dst``), so the aggregation is one CSR product.
    """

    def __init__(self, edge_index: np.ndarray, n_src: int, n_dst: int) -> None:
        src, dst = np.asarray(edge_index[0]), np.asarray(edge_index[1])
        order = np.lexsort((src, dst))
        src, dst = src[order], dst[order]
        back = np.lexsort((dst, src))  # CSR positions sorted by source: the transpose's order
        self.n_src, self.n_dst = n_src, n_dst
        self.src, self.dst = torch.from_numpy(src), torch.from_numpy(dst)
        self.crow = torch.from_numpy(_indptr(dst, n_dst))
        self.t_crow = torch.from_numpy(_indptr(src[back], n_src))
        self.t_col = torch.from_numpy(dst[back])
        self.t_perm = torch.from_numpy(back)

    def to(self, device: torch.device | str) -> "Adjacency":
        """This adjacency with its index tensors on ``device`` (itself when already there)."""
        device = torch.device(device)
        if self.src.device == device:
            return self
        moved = self.__dict__.setdefault("_moved", {})  # one copy per device, made once
        if device not in moved:
            out = object.__new__(Adjacency)
            out.n_src, out.n_dst = self.n_src, self.n_dst
            for name in ("src", "dst", "crow", "t_crow", "t_col", "t_perm"):
                setattr(out, name, getattr(self, name).to(device))
            moved[device] = out
        return moved[device]


def _indptr(sorted_keys: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(sorted_keys, minlength=n), out=out[1:])
    return out


def _csr(crow, col, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we use products only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


class _Aggregate(torch.autograd.Function):
    """``out = A @ h`` with ``A`` (n_dst x n_src) the CSR of :class:`Adjacency` holding
    ``values``.  Backward: ``dh = A^T @ g`` (CSR product) and ``dvalues[e] = g[dst_e] .
    h[src_e]`` (``torch.sparse.sampled_addmm`` on A's pattern): no (E x d) intermediate.
    PyTorch's own CSR autograd coalesces duplicates and the COO path is ~100x slower here."""

    @staticmethod
    def forward(ctx, values, h, adj):
        ctx.adj = adj
        ctx.save_for_backward(values, h)
        return _csr(adj.crow, adj.src, values, (adj.n_dst, adj.n_src)) @ h

    @staticmethod
    def backward(ctx, g):
        values, h = ctx.saved_tensors
        adj = ctx.adj
        g = g.contiguous()
        d_values = d_h = None
        if ctx.needs_input_grad[0]:
            pattern = _csr(adj.crow, adj.src, torch.zeros_like(values), (adj.n_dst, adj.n_src))
            d_values = torch.sparse.sampled_addmm(pattern, g, h.T, beta=0.0).values()
        if ctx.needs_input_grad[1]:
            d_h = _csr(adj.t_crow, adj.t_col, values[adj.t_perm], (adj.n_src, adj.n_dst)) @ g
        return d_values, d_h, None


# "auto": the custom CPU kernels on CPU tensors, PyTorch's device-generic ops elsewhere (CUDA);
# "torch": the device-generic ops everywhere (tests run the CUDA path's code on CPU with it).
KERNELS = "auto"


def use_torch_kernels(t: torch.Tensor) -> bool:
    return KERNELS == "torch" or t.device.type != "cpu"


def _aggregate(weights: torch.Tensor, adj: Adjacency, h: torch.Tensor) -> torch.Tensor:
    """``out[d] = sum over edges (s, d) of weights[e] * h[s]``: float32 (n_dst, h.shape[1]).

    CPU: the CSR kernel above (no (E x d) intermediate).  Other devices: ``index_add`` of the
    weighted source rows (one (E x d) buffer per sampled block: small next to GPU memory)."""
    if use_torch_kernels(h):
        adj = adj.to(h.device)
        msg = weights.unsqueeze(1) * torch.index_select(h, 0, adj.src)
        return torch.zeros(adj.n_dst, h.shape[1], dtype=h.dtype,
                           device=h.device).index_add(0, adj.dst, msg)
    return _Aggregate.apply(weights, h.contiguous(), adj)


def gat_conv(in_dim: int, out_dim: int, heads: int = 1, concat: bool = True) -> "GATConv":
    """A PyG ``GATConv`` layer without self-loops (the parameters every GAT here trains).
    torch_geometric is imported here, on first use, not with this module: importing it costs
    several seconds (it loads torch's compiler stack and its dataset modules), which a process
    that never builds a model (a bad-input error, a search or sampling task on Ray) should not
    pay."""
    from torch_geometric.nn import GATConv

    return GATConv(in_dim, out_dim, heads=heads, concat=concat, add_self_loops=False)


def _edge_softmax(conv: GATConv, s_src: torch.Tensor, s_dst: torch.Tensor,
                  adj: Adjacency) -> torch.Tensor:
    """GATConv's attention: softmax over each destination's in-edges of
    LeakyReLU(a_src . W x_s + a_dst . W x_d); float32 (E, heads)."""
    from torch_geometric.utils import softmax

    # index_select, not s[idx]: advanced indexing's backward (index_put_ with accumulate) sums
    # in a thread-dependent order on CPU, which made training non-deterministic
    adj = adj.to(s_src.device)
    e = F.leaky_relu(torch.index_select(s_src, 0, adj.src) + torch.index_select(s_dst, 0, adj.dst),
                     conv.negative_slope)
    return softmax(e, ptr=adj.crow, num_nodes=adj.n_dst)


def _heads_out(conv: GATConv, per_head: list[torch.Tensor]) -> torch.Tensor:
    out = torch.cat(per_head, dim=1) if conv.concat else torch.stack(per_head).mean(0)
    return out + conv.bias if conv.bias is not None else out


def gat_transformed(conv: GATConv, z: torch.Tensor, adj: Adjacency) -> torch.Tensor:
    """``conv((x, x[:n_dst]), edge_index)`` given ``z = conv.lin(x)``, (n_src, heads * C)."""
    n_dst = adj.n_dst
    h, c = conv.heads, conv.out_channels
    zh = z.view(-1, h, c)
    s_src = torch.einsum("nhc,hc->nh", zh, conv.att_src[0])
    s_dst = torch.einsum("nhc,hc->nh", zh[:n_dst], conv.att_dst[0])
    alpha = _edge_softmax(conv, s_src, s_dst, adj)
    return _heads_out(conv, [_aggregate(alpha[:, k], adj, zh[:, k])
                             for k in range(h)])


def gat_untransformed(conv: GATConv, x: torch.Tensor, adj: Adjacency, weight: torch.Tensor,
                      shift: torch.Tensor | None = None) -> torch.Tensor:
    """``conv`` applied to ``x @ weight.T + shift`` (``weight``: (heads * C, d)), computed
    aggregate-then-transform.

    The attention weights of each destination sum to one, so ``sum_j a_ij (W x_j + b) =
    W (sum_j a_ij x_j) + b``, and the attention logits are dot products of ``x`` with
    ``W^T a``: the (d -> heads * C) map runs on the ``n_dst`` destinations only, not on every
    source node.  Same function as GATConv (tested against it), several times fewer FLOPs on
    sampled blocks, where sources outnumber destinations.
    """
    h, c, n_dst = conv.heads, conv.out_channels, adj.n_dst
    w = weight.view(h, c, -1)
    s_src = x @ torch.einsum("hc,hcd->dh", conv.att_src[0], w)
    s_dst = x[:n_dst] @ torch.einsum("hc,hcd->dh", conv.att_dst[0], w)
    if shift is not None:
        b = shift.view(h, c)
        s_src = s_src + (b * conv.att_src[0]).sum(-1)
        s_dst = s_dst + (b * conv.att_dst[0]).sum(-1)
    alpha = _edge_softmax(conv, s_src, s_dst, adj)
    outs = []
    for k in range(h):
        o = _aggregate(alpha[:, k], adj, x) @ w[k].T
        outs.append(o + shift.view(h, c)[k] if shift is not None else o)
    return _heads_out(conv, outs)


_POOL: list = []
_MAX_PARTS = 8


def _torch_csr(m) -> torch.Tensor:
    """A scipy CSR matrix as a PyTorch CSR tensor (float32)."""
    return _csr(torch.from_numpy(m.indptr.astype(np.int64)),
                torch.from_numpy(m.indices.astype(np.int64)),
                torch.from_numpy(m.data.astype(np.float32)), m.shape)


def _row_parts(n: int) -> list[tuple[int, int]]:
    # the split depends on n only, never on the thread count: the partial sums are added in
    # range order, so a product is bit-identical on any machine or worker size
    k = max(1, min(_MAX_PARTS, n // 4096))
    cuts = np.linspace(0, n, k + 1).astype(int)
    return list(zip(cuts[:-1], cuts[1:]))


def _map_rows(fn, n: int) -> list:
    """``fn(a, b)`` over row ranges covering ``range(n)``, on torch's thread count (scipy's
    sparse products release the GIL); results in range order (deterministic sums)."""
    parts = _row_parts(n)
    if len(parts) == 1:
        return [fn(*parts[0])]
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max(2, torch.get_num_threads()),
                                        thread_name_prefix="psqe-spmm"))
    return list(_POOL[0].map(lambda ab: fn(*ab), parts))


class _SparseMatmul(torch.autograd.Function):
    """``X @ W`` for a constant scipy CSR ``X`` (n x d) and a dense ``W`` (d x k).

    Forward: PyTorch's CSR product (gathers rows of ``W``).  Backward ``dW = X^T @ g``: scipy
    row-range products in threads, each scattering rows of ``g`` into a partial ``dW``.  Measured on the DBP15K
    blocks (21k x 1024, 680k non-zeros, k = 300): 33 ms for the backward, against 135 ms for
    PyTorch's CSR product over ``X^T`` (long skewed rows) and ~140 ms for
    ``F.embedding_bag``'s backward."""

    @staticmethod
    def forward(ctx, w, x):
        ctx.x = x
        return _torch_csr(x) @ w

    @staticmethod
    def backward(ctx, g):
        x = ctx.x
        gn = g.detach().contiguous().numpy()
        parts = _map_rows(lambda a, b: x[a:b].T @ gn[a:b], x.shape[0])
        return torch.from_numpy(np.asarray(sum(parts[1:], parts[0]), dtype=np.float32)), None


def sparse_linear(f, rows: np.ndarray, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """``f[rows] @ weight.T + bias`` for a scipy CSR ``f`` (no dense copy of the rows).

    CPU: the custom kernel above.  Other devices: the rows as a sparse COO tensor on the
    weight's device and ``torch.sparse.mm`` (autograd gives ``dW = X^T g``)."""
    x = f[np.asarray(rows)]
    if use_torch_kernels(weight):
        coo = x.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        xs = torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data.astype(np.float32)),
                                     x.shape).to(weight.device)
        y = torch.sparse.mm(xs, weight.T)
    else:
        y = _SparseMatmul.apply(weight.T, x)
    return y + bias if bias is not None else y
