"""In-memory view of a KG pair for the algorithm: plain numpy arrays, no I/O.

``KGSide`` holds one graph with dense entity ids ``0 .. n-1``; ``KGPair`` holds both.  Built
from a dataset by :func:`psqe_ray.io.load.load_pair`, or by hand in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class KGSide:
    """One knowledge graph.

    Attributes:
        n: number of entities (ids ``0 .. n-1``).
        heads, relations, tails: int64 (E,) triples.
        relation_keys: (R,) object array, a vocabulary key per relation id: its name when the
            dataset names relations (comparable across graphs), else ``"<side>:<id>"``.
        attr_entity: int64 (A,) entity of each attribute row; ``attr_keys`` (A,) object array.
        names: list of n names (``None`` when missing).
        features: precomputed modalities, ``name -> (vectors float32 (n, d), present bool (n,))``.
    """

    n: int
    heads: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    relations: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tails: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    relation_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    attr_entity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    attr_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    names: list | None = None
    features: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def degree(self) -> np.ndarray:
        """int64 (n,): triples incident to each entity (a self-loop counts once)."""
        deg = np.bincount(self.heads, minlength=self.n)
        other = self.tails[self.tails != self.heads]
        return deg + np.bincount(other, minlength=self.n)

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Undirected CSR adjacency without self-loops or duplicates: (indptr (n+1,), indices)."""
        src = np.concatenate([self.heads, self.tails])
        dst = np.concatenate([self.tails, self.heads])
        keep = src != dst
        key = np.unique(src[keep] * np.int64(self.n) + dst[keep])
        src, dst = key // self.n, key % self.n
        indptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.bincount(src, minlength=self.n), out=indptr[1:])
        return indptr, dst.astype(np.int64)


@dataclass
class KGPair:
    """Two graphs; ``gold`` (left, right) int64 arrays are for evaluation only."""

    left: KGSide
    right: KGSide
    gold: tuple[np.ndarray, np.ndarray] | None = None

    def side(self, name: str) -> KGSide:
        return self.left if name == "left" else self.right
