"""Multimodal fusion (PSQE section 4.1.1, eq. 3-4).

The fused vector of an entity is the concatenation of its L2-normalised modality vectors, each
scaled by the modality's weight, L2-normalised again so that inner products are cosines::

    f(e) = normalise( [w_1 * x_1(e) / |x_1(e)|, ..., w_M * x_M(e) / |x_M(e)|] )

and so ``cos(f(a), f(b)) = sum_m w_m^2 cos(x_m(a), x_m(b)) / (|f(a)| |f(b)|)`` before the last
normalisation.  Missing modalities: the paper fills a missing image with a random vector drawn
from the per-dimension mean and standard deviation of the present ones;
:func:`psqe_ray.core.blocks.fill_block` does that for precomputed features and names.  Bag features (relations, attributes) stay zero
when absent: zero carries no evidence, a random bag would.
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of float32 (n, d) scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)


def fuse(modalities: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted concatenation of normalised modality matrices (same n rows), normalised.

    Modalities are concatenated in sorted name order so the layout is deterministic.
    """
    parts = [weights.get(m, 0.0) * l2_normalize(modalities[m]) for m in sorted(modalities)
             if weights.get(m, 0.0) > 0]
    if not parts:
        raise ValueError("no modality with a positive weight to fuse")
    return l2_normalize(np.concatenate(parts, axis=1))
