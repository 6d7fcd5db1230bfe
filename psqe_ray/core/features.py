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
relation / attribute / name is *absent* and its row is zero.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from psqe_ray.core.graph import KGSide


def _vocab(keys_left: np.ndarray, keys_right: np.ndarray, top: int) -> dict[str, int]:
    """The ``top`` most frequent keys of both sides, ties broken by key (deterministic)."""
    counts = Counter(keys_left.tolist())
    counts.update(keys_right.tolist())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {k: i for i, (k, _) in enumerate(ranked)}


def _bag(entity: np.ndarray, keys: np.ndarray, vocab: dict[str, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    col = np.fromiter((vocab.get(k, -1) for k in keys.tolist()), dtype=np.int64, count=len(keys))
    keep = col >= 0
    out = np.zeros((n, max(1, len(vocab))), np.float32)
    np.add.at(out, (entity[keep], col[keep]), 1.0)
    present = out.any(axis=1)
    return out, present


def relation_features(left: KGSide, right: KGSide, top: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bag-of-relations per entity for both sides: ``{"left": (x, present), "right": ...}``."""
    def incidence(side: KGSide) -> tuple[np.ndarray, np.ndarray]:
        rel_key = side.relation_keys[side.relations] if len(side.relations) else np.zeros(0, object)
        loops = side.heads == side.tails
        ent = np.concatenate([side.heads, side.tails[~loops]])
        key = np.concatenate([rel_key, rel_key[~loops]])
        return ent, key

    (el, kl), (er, kr) = incidence(left), incidence(right)
    vocab = _vocab(kl, kr, top)
    return {"left": _bag(el, kl, vocab, left.n), "right": _bag(er, kr, vocab, right.n)}


def attribute_features(left: KGSide, right: KGSide, top: int = 1000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bag-of-attributes per entity for both sides."""
    vocab = _vocab(left.attr_keys, right.attr_keys, top)
    return {"left": _bag(left.attr_entity, left.attr_keys, vocab, left.n),
            "right": _bag(right.attr_entity, right.attr_keys, vocab, right.n)}


def name_features(names: list, dim: int = 1024, ngram_min: int = 2,
                  ngram_max: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Hashed character n-grams of names: float32 (n, dim), L2-normalised; present = has a name."""
    from sklearn.feature_extraction.text import HashingVectorizer

    present = np.array([bool(s and s.strip()) for s in names], dtype=bool)
    text = [s.lower() if p else "" for s, p in zip(names, present.tolist())]
    vec = HashingVectorizer(analyzer="char_wb", ngram_range=(ngram_min, ngram_max),
                            n_features=dim, alternate_sign=False, norm="l2", lowercase=False,
                            dtype=np.float32)
    x = vec.transform(text).toarray().astype(np.float32, copy=False)
    return x, present
