"""Modality features built from the graphs themselves (PSQE section 4.1.1).

* relation: per entity, counts of the relations it takes part in (as head or tail), over the
  ``top`` most frequent relation keys of both graphs together (the EVA / MCLEA loaders do this
  with 1000 relations).  Keys are relation names when the dataset has them, so the two graphs
  share dimensions; otherwise per-side ids, and the vectors of the two graphs are orthogonal
  until Stage II learns a mapping.
* attribute: the same over attribute keys.
* name: hashed character n-grams (2..3 by default) of the lower-cased name, L2-normalised; no
  model needed.  Uses scikit-learn's ``HashingVectorizer`` (MurmurHash3: deterministic across
  processes, unlike Python's ``hash``).

Each function returns ``(vectors float32 (n, d), present bool (n,))``; an entity without any
relation / attribute / name is *absent* and its row is zero.  :func:`raw_rows` (what the seed
job and the aligner use) gives the bags and the n-grams as scipy CSR rows: tens of non-zeros
per row out of a thousand columns, never held dense.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from psqe_ray.core.graph import KGSide


def _vocab(keys_left: np.ndarray, keys_right: np.ndarray, top: int) -> dict[str, int]:
    """The ``top`` most frequent keys of both sides, ties broken by key (deterministic)."""
    counts = Counter(keys_left.tolist())
    counts.update(keys_right.tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {k: i for i, (k, _) in enumerate(ranked)}


def _columns(keys: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
    return np.fromiter((vocab.get(k, -1) for k in keys.tolist()), dtype=np.int64, count=len(keys))


def bag_block(entity: np.ndarray, column: np.ndarray, start: int, stop: int, dim: int
              ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows ``start:stop`` of a bag feature: CSR float32 (stop - start, dim) counts of the
    (entity, column) incidences (column -1: not in the vocabulary), and which rows have any."""
    keep = (column >= 0) & (entity >= start) & (entity < stop)
    out = sp.csr_matrix((np.ones(int(keep.sum()), np.float32),
                         (entity[keep] - start, column[keep])),
                        shape=(stop - start, max(1, dim)), dtype=np.float32)
    out.sum_duplicates()
    return out, np.diff(out.indptr) > 0


def relation_incidence(left: KGSide, right: KGSide, top: int = 1000
                       ) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Bag-of-relations incidences: (vocabulary size, side -> (entity int64, column int64))."""
    def incidence(side: KGSide) -> tuple[np.ndarray, np.ndarray]:
        rel_key = side.relation_keys[side.relations] if len(side.relations) else np.zeros(0, object)
        loops = side.heads == side.tails
        ent = np.concatenate([side.heads, side.tails[~loops]])
        key = np.concatenate([rel_key, rel_key[~loops]])
        return ent, key

    (el, kl), (er, kr) = incidence(left), incidence(right)
    vocab = _vocab(kl, kr, top)
    return len(vocab), {"left": (el.astype(np.int64), _columns(kl, vocab)),
                        "right": (er.astype(np.int64), _columns(kr, vocab))}


def attribute_incidence(left: KGSide, right: KGSide, top: int = 1000
                        ) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Bag-of-attributes incidences, as :func:`relation_incidence`."""
    vocab = _vocab(left.attr_keys, right.attr_keys, top)
    return len(vocab), {s: (np.asarray(side.attr_entity, np.int64), _columns(side.attr_keys, vocab))
                        for s, side in (("left", left), ("right", right))}


def _bags(dim: int, inc: dict, left: KGSide, right: KGSide) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for s, side in (("left", left), ("right", right)):
        x, present = bag_block(*inc[s], 0, side.n, dim)
        out[s] = (x.toarray(), present)
    return out


def relation_features(left: KGSide, right: KGSide, top: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bag-of-relations per entity for both sides: ``{"left": (x, present), "right": ...}``."""
    return _bags(*relation_incidence(left, right, top), left, right)


def attribute_features(left: KGSide, right: KGSide, top: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bag-of-attributes per entity for both sides."""
    return _bags(*attribute_incidence(left, right, top), left, right)


def name_features(names: list, dim: int = 1024, ngram_min: int = 2,
                  ngram_max: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Hashed character n-grams of names: float32 (n, dim), L2-normalised; present = has a name."""
    x, present = name_rows(names, dim, ngram_min, ngram_max)
    return x.toarray(), present


def name_rows(names: list, dim: int = 1024, ngram_min: int = 2,
              ngram_max: int = 3) -> tuple[sp.csr_matrix, np.ndarray]:
    """:func:`name_features` as CSR rows (sorted indices, no stored zeros)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    present = np.array([bool(s and s.strip()) for s in names], dtype=bool)
    text = [s.lower() if p else "" for s, p in zip(names, present.tolist())]
    vec = HashingVectorizer(analyzer="char_wb", ngram_range=(ngram_min, ngram_max),
                            n_features=dim, alternate_sign=False, norm="l2", lowercase=False,
                            dtype=np.float32)
    x = sp.csr_matrix(vec.transform(text), dtype=np.float32)
    x.eliminate_zeros()
    x.sort_indices()
    return x, present


@dataclass
class Source:
    """How one modality's raw rows are made, for any block of rows, in any process.

    kind: ``table`` (a precomputed feature table), ``bag`` (relation / attribute counts over a
    vocabulary: ``incidence`` side -> (entity int64, column int64)) or ``name`` (hashed n-grams).
    """

    modality: str
    kind: str
    label: str
    dim: int
    incidence: dict | None = None


def raw_rows(src: Source, side: str, start: int, stop: int, fc, *, names=None, table=None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of one side's raw modality: (float32 (rows, dim): CSR for bags and
    names, present bool).

    ``names``: the side's names from ``start`` on (name); ``table``: (x, present) of the side's
    precomputed table, rows from ``start`` on (table)."""
    n = stop - start
    if src.kind == "table":
        x, present = table
        return np.asarray(x[:n], np.float32), np.asarray(present[:n], bool)
    if src.kind == "bag":
        return bag_block(*src.incidence[side], start, stop, src.dim)
    return name_rows(list(names[:n]), fc.name_dim, fc.name_ngram_min, fc.name_ngram_max)
