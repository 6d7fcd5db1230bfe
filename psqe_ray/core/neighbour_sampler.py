"""Neighbour sampling for the GAT: blocks of at most ``fanout`` neighbours per node and hop.

PyG's ``NeighborLoader`` needs pyg-lib / torch-sparse, not installable here, so this is a small
CSR sampler of our own: training draws at most ``fanout[h]`` neighbours per node at hop ``h``
around the seed entities, so a step costs O(seeds x prod(fanout) x dim), not O(edges x dim);
``fanout=None`` gives full neighbourhoods (inference).  The message passing over the blocks is
in :mod:`psqe_ray.core.kernels`, the encoder in :mod:`psqe_ray.core.seed_encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psqe_ray.core.kernels import Adjacency


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
