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
        # every (dst position, neighbour slot) pair, vectorised
        starts = np.repeat(self.indptr[dst], deg)
        seg = np.repeat(np.arange(len(dst), dtype=np.int64), deg)
        within = np.arange(int(deg.sum()), dtype=np.int64) - np.repeat(np.cumsum(deg) - deg, deg)
        if fanout is not None and (deg > fanout).any():
            # uniform sample without replacement per node: keep the `fanout` smallest random keys
            key = self.rng.random(len(seg))
            key[np.repeat(deg <= fanout, deg)] = -1.0  # low-degree nodes keep everything
            order = np.lexsort((key, seg))
            rank = np.empty_like(order)
            rank[order] = within  # within-segment rank of each slot by key (segments are sorted)
            keep = rank < fanout
            starts, seg, within = starts[keep], seg[keep], within[keep]
        src_global = np.concatenate([self.indices[starts + within], dst])
        dst_pos = np.concatenate([seg, np.arange(len(dst), dtype=np.int64)])
        extra = np.setdiff1d(np.unique(src_global), dst, assume_unique=True)
        src_nodes = np.concatenate([dst, extra])
        order = np.argsort(src_nodes, kind="stable")
        src_pos = order[np.searchsorted(src_nodes[order], src_global)]
        return Block(src_nodes, len(dst), np.stack([src_pos, dst_pos]).astype(np.int64))

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


class SeedEncoder(nn.Module):
    """Anchor branch: Linear(d_anchor, dim) -> ``layers`` x GATConv; other branches: Linear.

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
        inputs (hashed n-grams, relation / attribute bags) go through a sparse matmul, which is
        what makes a CPU step cheap (nnz per row is tens, d is a thousand).
        """
        f = feats[m]
        layer = self.inp[m]
        if isinstance(f, torch.Tensor):
            return layer(f[torch.from_numpy(np.asarray(rows))])
        sub = f[np.asarray(rows)]
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on mm only
            warnings.simplefilter("ignore", UserWarning)
            x = torch.sparse_csr_tensor(torch.from_numpy(sub.indptr.astype(np.int64)),
                                        torch.from_numpy(sub.indices.astype(np.int64)),
                                        torch.from_numpy(sub.data.astype(np.float32)),
                                        sub.shape)
        return x @ layer.weight.T + layer.bias

    def gat(self, x: torch.Tensor, blocks: list[Block]) -> torch.Tensor:
        """x: float32 (len(blocks[0].src_nodes), dim) -> (blocks[-1].n_dst, dim)."""
        for k, (blk, conv) in enumerate(zip(blocks, self.convs)):
            ei = torch.from_numpy(blk.edge_index)
            x = conv((x, x[:blk.n_dst]), ei, size=(len(blk.src_nodes), blk.n_dst))
            if k < len(self.convs) - 1:
                x = F.elu(x)
        return x

    def embed_targets(self, feats: dict[str, torch.Tensor], targets: np.ndarray,
                      blocks: list[Block]) -> dict[str, torch.Tensor]:
        """Embeddings of ``targets`` (global node ids) per modality; float32 (T, dim) each."""
        out = {self.anchor: self.gat(self.project(self.anchor, feats, blocks[0].src_nodes),
                                     blocks)}
        for m in self.modalities:
            if m != self.anchor:
                out[m] = self.project(m, feats, targets)
        return out

    @torch.no_grad()
    def embed_all(self, feats: dict[str, torch.Tensor], sampler: CSRSampler,
                  chunk: int = 8192) -> dict[str, np.ndarray]:
        """Embeddings of every node, layer by layer over chunks with full neighbourhoods."""
        n = next(iter(feats.values())).shape[0]
        out = {}
        chunks = [np.arange(a, min(n, a + chunk)) for a in range(0, n, chunk)]
        h = torch.cat([self.project(self.anchor, feats, rows) for rows in chunks])
        for k, conv in enumerate(self.convs):
            nxt = torch.empty((n, conv.out_channels * (conv.heads if conv.concat else 1)))
            for a in range(0, n, chunk):
                dst = np.arange(a, min(n, a + chunk), dtype=np.int64)
                blk = sampler.layer(dst, None)
                x = h[torch.from_numpy(blk.src_nodes)]
                y = conv((x, x[:blk.n_dst]), torch.from_numpy(blk.edge_index),
                         size=(len(blk.src_nodes), blk.n_dst))
                nxt[a:a + len(dst)] = F.elu(y) if k < len(self.convs) - 1 else y
            h = nxt
        out[self.anchor] = h.numpy()
        for m in self.modalities:
            if m != self.anchor:
                out[m] = torch.cat([self.project(m, feats, rows) for rows in chunks]).numpy()
        return out


def as_model_input(x: np.ndarray, max_density: float = 0.1):
    """float32 (N, d) -> scipy CSR when at most ``max_density`` of it is non-zero, else a tensor."""
    import scipy.sparse as sp

    if x.size and np.count_nonzero(x) <= max_density * x.size:
        return sp.csr_matrix(x)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


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
    eye = torch.eye(n, dtype=torch.bool)
    lr = zl @ zr.T / temperature
    ll = (zl @ zl.T / temperature).masked_fill(eye, float("-inf"))
    rr = (zr @ zr.T / temperature).masked_fill(eye, float("-inf"))
    target = torch.arange(n)
    loss_l = F.cross_entropy(torch.cat([lr, ll], dim=1), target)
    loss_r = F.cross_entropy(torch.cat([lr.T, rr], dim=1), target)
    return (loss_l + loss_r) / 2
