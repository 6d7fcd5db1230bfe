"""Training-free neighbourhood smoothing of entity vectors (SEU's propagation, Mao et al. 2021,
applied to a trained aligner's output).

An entity's own vector says what the aligner learned about it; the mean of its neighbours'
vectors, and of their neighbours', says what its neighbourhood looks like.  Two entities that
are the same thing in two graphs tend to agree on both, so the final vectors concatenate them:

    out(e) = concat_{h = 0..H}  n(A^h x)(e) / sqrt(H + 1)

with ``A`` the row-normalised adjacency of the entity's own graph (the mean over its
neighbours, no self-loop: hop 0 already holds the entity) and ``n`` row-wise L2
normalisation.  A hop block of an entity without neighbours is zero.  Every block is unit
length, so the inner product of two outputs is the mean of the hop-wise cosines, in [-1, 1]
like the input's.  No parameter is learned and no pair is read: the same for any seeds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["smooth"]


def _normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def smooth(x: np.ndarray, graph: tuple[np.ndarray, np.ndarray], hops: int,
           chunk: int = 65536) -> np.ndarray:
    """float32 (N, (hops + 1) * D): ``x`` float (N, D) and its ``hops`` neighbourhood means
    (module docstring) over ``graph`` = CSR (indptr (N + 1,), indices), undirected, without
    self-loops; ``hops=0`` returns ``x`` row-normalised.  Rows are made ``chunk`` at a time,
    so the extra memory beyond the output is one hop's matrix."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    indptr, indices = (np.asarray(a) for a in graph)
    n, d = x.shape
    if len(indptr) != n + 1:
        raise ValueError(f"graph has {len(indptr) - 1} nodes, x has {n} rows")
    deg = np.diff(indptr).astype(np.float32)
    weights = np.repeat(1.0 / np.maximum(deg, 1.0), np.diff(indptr)).astype(np.float32)
    a = sp.csr_matrix((weights, indices, indptr), shape=(n, n))
    scale = np.float32(1.0 / np.sqrt(hops + 1))
    out = np.empty((n, (hops + 1) * d), np.float32)
    h = np.asarray(x, np.float32)
    for k in range(hops + 1):
        if k:  # the next hop from the previous one, before it is let go
            h = np.vstack([a[s:s + chunk] @ h for s in range(0, n, chunk)]) if n else h
        for s in range(0, n, chunk):
            out[s:s + chunk, k * d:(k + 1) * d] = _normalise(h[s:s + chunk]) * scale
    return out
