"""Stage II encoder: GAT over the anchor modality plus linear branches, trained with ICL.

PSQE section 4.2.1 (eq. 5-6): the anchor modality (the image in the paper) goes through a linear
layer to ``dim`` and a 2-layer GAT over the structure of both graphs (one disconnected graph with
self-loops); every other modality through one linear layer.  The intra-modal contrastive loss
(ICL, eq. 1-2 / 6) on the Stage I seeds trains all branches.

Memory: training never runs the GAT over the whole graph.  A small CSR neighbour sampler (PyG's
``NeighborLoader`` needs pyg-lib / torch-sparse, not installable here) draws at most
``fanout[h]`` neighbours per node at hop ``h`` around the seed entities, so a step costs
O(seeds x prod(fanout) x dim), not O(edges x dim).  Inference (all entities, no gradients) runs
layer by layer over chunks of destination nodes with their full neighbourhoods.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv



@dataclass
class Block:
    """One message-passing layer over a bipartite sub-graph.

    ``src_nodes`` int64 (S,): global node ids whose features enter the layer; the first
    ``n_dst`` of them are the destination nodes (so ``x_dst = x_src[:n_dst]``).
    ``edge_index`` int64 (2, E): local (src position, dst position) pairs, self-loops included.
    """

    src_nodes: np.ndarray
    n_dst: int
    edge_index: np.ndarray

    def adjacency(self) -> "Adjacency":
        return Adjacency(self.edge_index, len(self.src_nodes), self.n_dst)


class CSRSampler:
    """Uniform neighbour sampling without replacement over an undirected CSR graph.

    Args:
        indptr: int64 (N+1,), indices: int64 (nnz,): neighbours of node i are
            ``indices[indptr[i]:indptr[i+1]]`` (no self-loops; they are added per block).
        rng: the generator all draws come from (determinism).
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, rng: np.random.Generator) -> None:
        self.indptr = indptr
        self.indices = indices
        self.rng = rng

    def layer(self, dst: np.ndarray, fanout: int | None) -> Block:
        """One block: each node of ``dst`` (unique int64) gets <= ``fanout`` neighbours + itself."""
        deg = self.indptr[dst + 1] - self.indptr[dst]
        take = deg if fanout is None else np.minimum(deg, fanout)
        seg = np.repeat(np.arange(len(dst), dtype=np.int64), take)
        within = np.arange(int(take.sum()), dtype=np.int64) - np.repeat(np.cumsum(take) - take, take)
        if fanout is not None:
            high = deg > fanout
            if high.any():  # slots of a node are contiguous, nodes in order: rows of the sample
                within[np.repeat(high, take)] = self.subsets(deg[high], fanout).ravel()
        src_global = np.concatenate([self.indices[np.repeat(self.indptr[dst], take) + within], dst])
        dst_pos = np.concatenate([seg, np.arange(len(dst), dtype=np.int64)])
        extra = np.setdiff1d(np.unique(src_global), dst, assume_unique=True)
        src_nodes = np.concatenate([dst, extra])
        order = np.argsort(src_nodes, kind="stable")
        src_pos = order[np.searchsorted(src_nodes[order], src_global)]
        return Block(src_nodes, len(dst), np.stack([src_pos, dst_pos]).astype(np.int64))

    def subsets(self, n: np.ndarray, k: int) -> np.ndarray:
        """A uniform ``k``-subset of ``range(n[i])`` per row (``n >= k``): int64 (len(n), k).

        Floyd's algorithm, vectorised over the rows: for ``j = n-k .. n-1`` draw ``t`` in
        ``[0, j]`` and take ``t``, or ``j`` when ``t`` is already taken.  O(rows x k^2), whatever
        the degrees (a hub's neighbour list is never materialised).
        """
        out = np.empty((len(n), k), np.int64)
        for j in range(k):
            top = n - k + j
            t = self.rng.integers(0, top + 1)
            taken = (out[:, :j] == t[:, None]).any(axis=1)
            out[:, j] = np.where(taken, top, t)
        return out

    def blocks(self, targets: np.ndarray, fanouts: tuple[int | None, ...]) -> list[Block]:
        """Blocks for ``len(fanouts)`` layers around ``targets``, outermost first.

        ``fanouts[0]`` is the first hop from the targets (PyG's ``num_neighbors`` order).
        """
        out: list[Block] = []
        dst = np.asarray(targets, dtype=np.int64)
        for f in fanouts:
            blk = self.layer(dst, f)
            out.append(blk)
            dst = blk.src_nodes
        return out[::-1]


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


class SeedEncoder(nn.Module):
    """Anchor branch: Linear(d_anchor, dim) -> ``layers`` x GATConv; other branches: Linear.

    The parameters are PyG ``GATConv`` modules; the training forward (:meth:`embed_targets`)
    computes the same function in a cheaper order (:func:`gat_untransformed`, and for a
    sparse anchor the input layer folded into the first GAT projection).

    Args:
        dims: input dimension per modality name.
        anchor: the modality under the GAT.
    """

    def __init__(self, dims: dict[str, int], anchor: str, dim: int = 300, layers: int = 2,
                 heads: int = 1) -> None:
        super().__init__()
        self.anchor = anchor
        self.modalities = sorted(dims)
        self.inp = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in dims.items()})
        self.convs = nn.ModuleList(
            GATConv(dim, dim // heads if heads > 1 else dim, heads=heads, concat=heads > 1,
                    add_self_loops=False) for _ in range(layers))

    def project(self, m: str, feats: dict, rows: np.ndarray) -> torch.Tensor:
        """Input layer of modality ``m`` for ``rows``: float32 (len(rows), dim).

        ``feats[m]`` is a dense float32 tensor (N, d) or a scipy CSR matrix (N, d): sparse
        inputs (hashed n-grams, relation / attribute bags) go through an embedding-bag sum,
        which is what makes a CPU step cheap (nnz per row is tens, d is a thousand).
        """
        return project(self.inp[m], feats[m], rows)

    def gat(self, feats: dict, blocks: list[Block]) -> torch.Tensor:
        """Anchor input rows ``blocks[0].src_nodes`` -> (blocks[-1].n_dst, dim) through every
        layer.  First layer: ``conv1(inp(x))`` = ``x @ (W1 Win)^T + W1 b`` into the attention."""
        f = feats[self.anchor]
        inp, first = self.inp[self.anchor], self.convs[0]
        w = first.lin.weight @ inp.weight
        b = first.lin.weight @ inp.bias
        b0 = blocks[0]
        adj = b0.adjacency()
        if isinstance(f, torch.Tensor):
            x = f[torch.from_numpy(b0.src_nodes)].to(w.device)
            h = gat_untransformed(first, x, adj, w, b)
        else:
            h = gat_transformed(first, sparse_linear(f, b0.src_nodes, w, b), adj)
        for blk, conv in zip(blocks[1:], self.convs[1:]):
            h = gat_untransformed(conv, F.elu(h), blk.adjacency(), conv.lin.weight)
        return h

    def embed_targets(self, feats: dict, targets: np.ndarray,
                      blocks: list[Block]) -> dict[str, torch.Tensor]:
        """Embeddings of ``targets`` (global node ids) per modality; float32 (T, dim) each."""
        out = {self.anchor: self.gat(feats, blocks)}
        for m in self.modalities:
            if m != self.anchor:
                out[m] = self.project(m, feats, targets)
        return out

    @torch.no_grad()
    def embed_anchor(self, feats: dict, sampler: CSRSampler, chunk: int = 8192) -> np.ndarray:
        """The anchor branch of every node, layer by layer over chunks with full
        neighbourhoods (each layer's projection once per node, then the attention per chunk)."""
        n = next(iter(feats.values())).shape[0]
        chunks = [np.arange(a, min(n, a + chunk)) for a in range(0, n, chunk)]
        h = torch.cat([self.project(self.anchor, feats, rows) for rows in chunks])
        return propagate_full(self.convs, h, sampler, chunk).cpu().numpy()

    @torch.no_grad()
    def embed_all(self, feats: dict, sampler: CSRSampler,
                  chunk: int = 8192) -> dict[str, np.ndarray]:
        """Embeddings of every node per modality (the anchor's by :meth:`embed_anchor`, the
        others projected chunk by chunk)."""
        n = next(iter(feats.values())).shape[0]
        out = {self.anchor: self.embed_anchor(feats, sampler, chunk)}
        chunks = [np.arange(a, min(n, a + chunk)) for a in range(0, n, chunk)]
        for m in self.modalities:
            if m != self.anchor:
                out[m] = torch.cat([self.project(m, feats, rows)
                                    for rows in chunks]).cpu().numpy()
        return out


def project(layer: nn.Linear, f, rows: np.ndarray) -> torch.Tensor:
    """``layer(f[rows])`` for a dense tensor or a scipy CSR ``f`` (sparse rows never densified);
    the rows move to the layer's device."""
    if isinstance(f, torch.Tensor):
        return layer(f[torch.from_numpy(np.asarray(rows))].to(layer.weight.device))
    return sparse_linear(f, rows, layer.weight, layer.bias)


def gat_blocks(convs, x: torch.Tensor, blocks: list[Block]) -> torch.Tensor:
    """``x`` (rows ``blocks[0].src_nodes``, already at the convs' input width) through every
    layer (ELU between layers) -> (blocks[-1].n_dst, out)."""
    h = x
    for k, (blk, conv) in enumerate(zip(blocks, convs)):
        h = gat_untransformed(conv, F.elu(h) if k else h, blk.adjacency(), conv.lin.weight)
    return h


@torch.no_grad()
def propagate_full(convs, h: torch.Tensor, sampler: CSRSampler, chunk: int = 8192) -> torch.Tensor:
    """Every node through ``convs`` with full neighbourhoods (no sampling): layer by layer over
    chunks of destination nodes, each layer's projection once per node.  ``h``: (N, d_in)."""
    n = h.shape[0]
    chunks = [np.arange(a, min(n, a + chunk)) for a in range(0, n, chunk)]
    # full neighbourhoods do not change between layers: build each chunk's block once
    blocks = [sampler.layer(rows.astype(np.int64), None) for rows in chunks]
    adjs = [blk.adjacency() for blk in blocks]
    for k, conv in enumerate(convs):
        z = conv.lin(h)
        nxt = torch.empty((n, z.shape[1] if conv.concat else conv.out_channels), device=z.device)
        for rows, blk, adj in zip(chunks, blocks, adjs):
            src = torch.from_numpy(blk.src_nodes).to(z.device)
            y = gat_transformed(conv, torch.index_select(z, 0, src), adj)
            nxt[rows[0]:rows[-1] + 1] = F.elu(y) if k < len(convs) - 1 else y
        h = nxt
    return h


def icl_loss(zl: torch.Tensor, zr: torch.Tensor, temperature: float = 1.0,
             normalize: bool = False) -> torch.Tensor:
    """Bidirectional intra-modal contrastive loss (PSQE eq. 1-2, MCLEA's ICL).

    zl, zr: float32 (B, d), row i of each is a seed pair.  For a left anchor the positive is its
    partner; negatives are every other right entity of the batch and every other left entity
    (in-batch negatives from both graphs).  Mean of the two directions' cross-entropies.
    """
    if normalize:
        zl, zr = F.normalize(zl, dim=1), F.normalize(zr, dim=1)
    n = zl.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=zl.device)
    lr = zl @ zr.T / temperature
    ll = (zl @ zl.T / temperature).masked_fill(eye, float("-inf"))
    rr = (zr @ zr.T / temperature).masked_fill(eye, float("-inf"))
    target = torch.arange(n, device=zl.device)
    loss_l = F.cross_entropy(torch.cat([lr, ll], dim=1), target)
    loss_r = F.cross_entropy(torch.cat([lr.T, rr], dim=1), target)
    return (loss_l + loss_r) / 2
