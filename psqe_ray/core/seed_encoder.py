"""Stage II encoder: GAT over the anchor modality plus linear branches, trained with ICL.

PSQE section 4.2.1 (eq. 5-6): the anchor modality (the image in the paper) goes through a linear
layer to ``dim`` and a 2-layer GAT over the structure of both graphs (one disconnected graph with
self-loops); every other modality through one linear layer.  The intra-modal contrastive loss
(ICL, eq. 1-2 / 6) on the Stage I seeds trains all branches.

Memory: training never runs the GAT over the whole graph: it runs over blocks drawn by the
neighbour sampler (:mod:`psqe_ray.core.neighbour_sampler`), with the kernels of
:mod:`psqe_ray.core.kernels`.  Inference (all entities, no gradients) runs layer by layer over
chunks of destination nodes with their full neighbourhoods.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psqe_ray.core.kernels import gat_conv, gat_transformed, gat_untransformed, sparse_linear
from psqe_ray.core.neighbour_sampler import Block, CSRSampler


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
            gat_conv(dim, dim // heads if heads > 1 else dim, heads=heads, concat=heads > 1)
            for _ in range(layers))

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
