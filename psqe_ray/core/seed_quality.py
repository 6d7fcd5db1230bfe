"""Seed quality (of the pseudo seeds): precision/recall against gold links, graph coverage.

The PSQE paper (KDD 2026, Sec. 6.1.2, eq. 11) judges pseudo seeds by precision and by a "graph
coverage balance" whose exact formula did not survive extraction. The figures below are our own
definitions; every one is a pure function of numpy arrays and returns plain Python numbers,
lists and dicts (JSON-able; an undefined ratio is ``None``, never NaN).

Notation, per side (left or right) of the alignment:

* ``n`` entities with dense ids ``0 .. n-1``; ``m`` triples ``(h_j, r_j, t_j)``, ``j = 1..m``
  (parallel triples with different relations count separately).
* ``S`` the set of **seeded** entities of that side: the left (or right) ids of the seed pairs.
  Seeds are one-to-one, so ``|S|`` is the seed count on both sides.
* ``deg(v) = |{ j : h_j = v or t_j = v }|``: the number of triples incident to ``v``; a
  self-loop ``(v, r, v)`` counts once.

Precision and recall (paper eq. 11). With ``P`` the set of seed pairs and ``G`` the set of gold
pairs (duplicate rows collapse: both are sets), a seed ``(l, r)`` is correct iff ``(l, r) in G``::

    precision = |P & G| / |P|        (None if |P| = 0)
    recall    = |P & G| / |G|        (None if |G| = 0)

Coverage figures, each computed per side and averaged over the two sides (``mean``):

* **Edge coverage** -- the share of triples that touch a seeded entity::

      edge_coverage = |{ j : h_j in S or t_j in S }| / m        (0 if m = 0)

  It is 1 when every entity is seeded. A self-loop is one triple and is counted once.
* **Entity coverage** -- ``|S| / n`` (None if ``n = 0``).
* **Degree buckets** -- fixed log2 buckets of ``deg``: ``B_0 = [0, 0]``, ``B_1 = [1, 1]``,
  ``B_k = [2^(k-1), 2^k - 1]`` for ``k >= 2`` (``[2, 3]``, ``[4, 7]``, ``[8, 15]``, ...), up to
  the bucket holding the largest degree; empty buckets in between are listed with zero counts so
  that two reports on graphs of similar size line up. For bucket ``b`` with ``n_b`` entities of
  which ``s_b`` are seeded::

      entity_share_b    = n_b / n       (q, the entity distribution over buckets)
      seed_share_b      = s_b / |S|     (p, the seed distribution over buckets; None if |S| = 0)
      seeded_fraction_b = s_b / n_b     (None if n_b = 0)

* **Cluster shares** -- the same ``entity_share`` / ``seed_share`` per cluster id, for any given
  partition of the entities (e.g. the K-means clusters of PSQE Stage I).
* **Degree gap** and **cluster gap** -- the total variation distance between the seed
  distribution ``p`` and the entity distribution ``q`` over the buckets (or clusters)::

      gap = 0.5 * sum_b |p_b - q_b|      in [0, 1]        (None if |S| = 0)

  0 means the seeds are spread over degree buckets (clusters) exactly as the entities are; 1 means
  seeds and entities occupy disjoint buckets. It equals the largest share of entities of any set
  of buckets that the seeds over- or under-represent.

"Better spread" means: a higher edge coverage **at the same seed count** (seed sets of different
sizes are not comparable on coverage, since coverage grows with ``|S|``), and a smaller degree
gap and cluster gap (seeds are not concentrated in dense hubs or in a few regions of the graph).
Precision is reported next to coverage, never traded into one number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psqe_ray.core.ids import as_ids

__all__ = [
    "seed_precision_recall",
    "entity_degree",
    "edge_coverage",
    "bucket_index",
    "degree_buckets",
    "bucket_shares",
    "cluster_shares",
    "distribution_gap",
    "coverage_report",
]

# Tolerance on "a distribution sums to 1": shares are ratios of integer counts, so their float
# sum is off by a few ulps per term at most; 1e-6 is loose enough for any realistic bucket count.
_SUM_TOL = 1e-6


def _mask(name: str, seeded: np.ndarray) -> np.ndarray:
    """Check that ``seeded`` is a 1-D bool mask (an id list passed here would silently misread)."""
    arr = np.asarray(seeded)
    if arr.ndim != 1 or arr.dtype != np.bool_:
        raise TypeError(f"{name} must be a 1-D bool mask, got dtype {arr.dtype}, shape {arr.shape}")
    return arr


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _pair_codes(left: np.ndarray, right: np.ndarray, n_right: int) -> np.ndarray:
    """Encode pairs as ``left * n_right + right`` (int64), a bijection for ``right < n_right``."""
    if left.size and int(left.max()) > (np.iinfo(np.int64).max - n_right) // max(n_right, 1):
        raise ValueError("entity ids too large to encode pairs in int64")
    return left * np.int64(n_right) + right


def seed_precision_recall(
    seed_left: np.ndarray,
    seed_right: np.ndarray,
    gold_left: np.ndarray,
    gold_right: np.ndarray,
) -> dict:
    """Precision and recall of a seed set against gold links (PSQE Sec. 6.1.2, eq. 11).

    With ``P = {(seed_left[i], seed_right[i])}`` and ``G = {(gold_left[j], gold_right[j])}`` as
    sets of pairs (duplicate rows count once)::

        correct   = |P & G|
        precision = correct / |P|    (None if |P| = 0)
        recall    = correct / |G|    (None if |G| = 0)

    Args:
        seed_left, seed_right: int (s,), the seed pairs; non-negative entity ids.
        gold_left, gold_right: int (g,), the gold pairs; non-negative entity ids.

    Returns:
        ``{"count": |P|, "correct": int, "precision": float | None, "recall": float | None}``.
    """
    sl, sr = as_ids("seed_left", seed_left), as_ids("seed_right", seed_right)
    gl, gr = as_ids("gold_left", gold_left), as_ids("gold_right", gold_right)
    if sl.shape != sr.shape:
        raise ValueError(f"seed_left and seed_right differ in length: {sl.size} vs {sr.size}")
    if gl.shape != gr.shape:
        raise ValueError(f"gold_left and gold_right differ in length: {gl.size} vs {gr.size}")
    # One radix for both sets so that equal pairs get equal codes.
    n_right = int(max(sr.max(initial=-1), gr.max(initial=-1))) + 1
    seeds = np.unique(_pair_codes(sl, sr, n_right))
    gold = np.unique(_pair_codes(gl, gr, n_right))
    # Both sides are sorted and unique, so a merge via intersect1d avoids a hash set per pair.
    correct = int(np.intersect1d(seeds, gold, assume_unique=True).size)
    return {
        "count": int(seeds.size),
        "correct": correct,
        "precision": _ratio(correct, int(seeds.size)),
        "recall": _ratio(correct, int(gold.size)),
    }


def entity_degree(n: int, heads: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Number of triples incident to each entity; a self-loop counts once.

    ``deg(v) = |{ j : heads[j] = v or tails[j] = v }|``.

    Args:
        n: the number of entities of the graph.
        heads, tails: int (m,), the triples' endpoints, ids in ``[0, n)``.

    Returns:
        int64 (n,), the degrees.
    """
    h, t = as_ids("heads", heads, n), as_ids("tails", tails, n)
    if h.shape != t.shape:
        raise ValueError(f"heads and tails differ in length: {h.size} vs {t.size}")
    # A self-loop touches its entity once; counting its tail too would make it a double edge.
    return (np.bincount(h, minlength=n) + np.bincount(t[t != h], minlength=n)).astype(np.int64)


def edge_coverage(seeded: np.ndarray, heads: np.ndarray, tails: np.ndarray) -> float:
    """Share of triples with at least one seeded endpoint.

    ``edge_coverage = |{ j : seeded[heads[j]] or seeded[tails[j]] }| / m``, 0 if ``m = 0``.
    A self-loop is one triple, counted once.

    Args:
        seeded: bool (n,), True for the seeded entities of this side.
        heads, tails: int (m,), the triples' endpoints, ids in ``[0, n)``.

    Returns:
        The share, a float in ``[0, 1]``.
    """
    mask = _mask("seeded", seeded)
    h, t = as_ids("heads", heads, mask.size), as_ids("tails", tails, mask.size)
    if h.shape != t.shape:
        raise ValueError(f"heads and tails differ in length: {h.size} vs {t.size}")
    if h.size == 0:
        return 0.0
    return float(np.count_nonzero(mask[h] | mask[t]) / h.size)


def bucket_index(degree: np.ndarray) -> np.ndarray:
    """Log2 bucket of each degree: 0 -> 0, and ``d >= 1`` -> ``floor(log2 d) + 1``.

    ``frexp`` writes ``d = f * 2**e`` with ``f`` in ``[0.5, 1)``, so ``e = floor(log2 d) + 1``
    exactly (no float rounding of a logarithm) for ``d < 2**53``, and ``e = 0`` for ``d = 0``.
    """
    return np.frexp(degree.astype(np.float64))[1].astype(np.int64)


def _degrees(degree: np.ndarray) -> np.ndarray:
    d = np.asarray(degree)
    if d.ndim != 1:
        raise ValueError(f"degree must be 1-D, got shape {d.shape}")
    if d.size and not np.issubdtype(d.dtype, np.integer):
        raise TypeError(f"degree must be integer, got dtype {d.dtype}")
    d = d.astype(np.int64, copy=False)
    if d.size and int(d.min()) < 0:
        raise ValueError("degree holds a negative value")
    return d


def degree_buckets(degree: np.ndarray) -> list[tuple[int, int]]:
    """The fixed log2 degree buckets ``[0,0], [1,1], [2,3], [4,7], [8,15], ...``.

    Bucket ``k >= 2`` is ``[2**(k-1), 2**k - 1]``; the list ends with the bucket holding
    ``max(degree)`` (just ``[(0, 0)]`` for an empty or all-zero degree array).

    Args:
        degree: int (n,), non-negative degrees.

    Returns:
        A list of inclusive ``(lo, hi)`` bounds, as Python ints.
    """
    d = _degrees(degree)
    last = int(bucket_index(d).max(initial=0))
    return [(0, 0)] + [(1 << (k - 1), (1 << k) - 1) for k in range(1, last + 1)]


def _shares(mask: np.ndarray, group: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    entities = np.bincount(group, minlength=n_groups)
    seeds = np.bincount(group[mask], minlength=n_groups)
    return entities, seeds


def bucket_shares(seeded: np.ndarray, degree: np.ndarray) -> list[dict]:
    """Entity and seed counts and shares per log2 degree bucket (see :func:`degree_buckets`).

    For bucket ``b`` with ``n_b`` entities, ``s_b`` of them seeded, ``n`` entities and ``S``
    seeded entities in all::

        entity_share = n_b / n      (None if n = 0)
        seed_share   = s_b / S      (None if S = 0)
        seeded_fraction = s_b / n_b (None if n_b = 0)

    Args:
        seeded: bool (n,), True for the seeded entities.
        degree: int (n,), non-negative degrees (e.g. from :func:`entity_degree`).

    Returns:
        One dict per bucket, in degree order: ``{"degrees": "lo-hi", "entities": n_b,
        "entity_share", "seeds": s_b, "seed_share", "seeded_fraction"}``.
    """
    mask = _mask("seeded", seeded)
    d = _degrees(degree)
    if d.shape != mask.shape:
        raise ValueError(f"seeded and degree differ in length: {mask.size} vs {d.size}")
    bounds = degree_buckets(d)
    entities, seeds = _shares(mask, bucket_index(d), len(bounds))
    n, s = int(mask.size), int(np.count_nonzero(mask))
    return [
        {
            "degrees": f"{lo}-{hi}",
            "entities": int(nb),
            "entity_share": _ratio(int(nb), n),
            "seeds": int(sb),
            "seed_share": _ratio(int(sb), s),
            "seeded_fraction": _ratio(int(sb), int(nb)),
        }
        for (lo, hi), nb, sb in zip(bounds, entities, seeds)
    ]


def cluster_shares(seeded: np.ndarray, cluster_of: np.ndarray) -> list[dict]:
    """Entity and seed counts and shares per cluster.

    For cluster ``c`` with ``n_c`` entities, ``s_c`` of them seeded::

        entity_share = n_c / n    (None if n = 0)
        seed_share   = s_c / S    (None if S = 0)

    Args:
        seeded: bool (n,), True for the seeded entities.
        cluster_of: int (n,), the cluster id of each entity (any integers, e.g. -1 for "none").

    Returns:
        One dict per cluster id present in ``cluster_of``, in increasing id order:
        ``{"cluster": id, "entities": n_c, "entity_share", "seeds": s_c, "seed_share"}``.
    """
    mask = _mask("seeded", seeded)
    c = np.asarray(cluster_of)
    if c.shape != mask.shape:
        raise ValueError(f"seeded and cluster_of differ in shape: {mask.shape} vs {c.shape}")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"cluster_of must be integer, got dtype {c.dtype}")
    # Cluster ids need not be dense (K-means may leave a cluster empty), so index by rank.
    ids, group = np.unique(c.astype(np.int64, copy=False), return_inverse=True)
    entities, seeds = _shares(mask, group.reshape(-1), ids.size)
    n, s = int(mask.size), int(np.count_nonzero(mask))
    return [
        {
            "cluster": int(cid),
            "entities": int(nc),
            "entity_share": _ratio(int(nc), n),
            "seeds": int(sc),
            "seed_share": _ratio(int(sc), s),
        }
        for cid, nc, sc in zip(ids, entities, seeds)
    ]


def _distribution(name: str, x: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative shares")
    if abs(float(arr.sum()) - 1.0) > _SUM_TOL:
        raise ValueError(f"{name} must sum to 1, sums to {float(arr.sum())!r}")
    return arr


def distribution_gap(
    seed_share: Sequence[float] | np.ndarray, entity_share: Sequence[float] | np.ndarray
) -> float:
    """Total variation distance between the seed and the entity distribution over buckets.

    ``gap = 0.5 * sum_b |p_b - q_b|`` with ``p = seed_share``, ``q = entity_share``; it lies in
    ``[0, 1]``: 0 when seeds are spread exactly like entities, 1 when they share no bucket.

    Args:
        seed_share: float (k,), a probability distribution (non-negative, sums to 1).
        entity_share: float (k,), a probability distribution over the same k buckets.

    Returns:
        The distance, a float in ``[0, 1]``.
    """
    p = _distribution("seed_share", seed_share)
    q = _distribution("entity_share", entity_share)
    if p.shape != q.shape:
        raise ValueError(f"seed_share and entity_share differ in length: {p.size} vs {q.size}")
    # Clip: rounding in the shares can push the sum a few ulps past 1 for disjoint supports.
    return float(min(1.0, 0.5 * np.abs(p - q).sum()))


def _gap(rows: list[dict]) -> float | None:
    if not rows or rows[0]["seed_share"] is None or rows[0]["entity_share"] is None:
        return None  # no seeds (or no entities): the seed distribution is undefined
    return distribution_gap([r["seed_share"] for r in rows], [r["entity_share"] for r in rows])


def _mean(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (a + b) / 2


def coverage_report(
    seed_left: np.ndarray,
    seed_right: np.ndarray,
    n_left: int,
    n_right: int,
    triples_left: tuple[np.ndarray, np.ndarray],
    triples_right: tuple[np.ndarray, np.ndarray],
    cluster_left: np.ndarray | None = None,
    cluster_right: np.ndarray | None = None,
) -> dict:
    """All coverage figures of a seed set, per side and averaged (definitions: module docstring).

    The degree of an entity is the number of triples incident to it (head or tail; a self-loop
    counts once), see :func:`entity_degree`.

    Args:
        seed_left, seed_right: int (s,), the seed pairs; ids in ``[0, n_left)`` / ``[0, n_right)``.
        n_left, n_right: the entity counts of the two graphs.
        triples_left, triples_right: ``(heads, tails)``, each int (m,), per graph.
        cluster_left, cluster_right: optional int (n_left,) / (n_right,) cluster ids; the
            cluster figures are reported only when both are given.

    Returns:
        ``{"seeds": s, "edge_coverage": {"left", "right", "mean"},
        "entity_coverage": {"left", "right", "mean"},
        "degree_buckets": {"left": [...], "right": [...]},  # rows of bucket_shares
        "degree_gap": {"left", "right", "mean"}}``, plus ``"clusters": {"left", "right"}``
        (rows of cluster_shares) and ``"cluster_gap": {"left", "right", "mean"}`` when cluster
        arrays are given. ``s`` counts distinct seed pairs; a ratio with a zero denominator is
        None.
    """
    sl, sr = as_ids("seed_left", seed_left, n_left), as_ids("seed_right", seed_right, n_right)
    if sl.shape != sr.shape:
        raise ValueError(f"seed_left and seed_right differ in length: {sl.size} vs {sr.size}")
    if (cluster_left is None) != (cluster_right is None):
        raise ValueError("give cluster arrays for both sides or for neither")

    sides = {
        "left": (sl, int(n_left), triples_left, cluster_left),
        "right": (sr, int(n_right), triples_right, cluster_right),
    }
    edge, entity, buckets, gaps, clusters, cgaps = {}, {}, {}, {}, {}, {}
    for side, (ids, n, (heads, tails), cluster) in sides.items():
        seeded = np.zeros(n, dtype=bool)
        seeded[ids] = True
        edge[side] = edge_coverage(seeded, heads, tails)
        entity[side] = _ratio(int(np.count_nonzero(seeded)), n)
        buckets[side] = bucket_shares(seeded, entity_degree(n, heads, tails))
        gaps[side] = _gap(buckets[side])
        if cluster is not None:
            clusters[side] = cluster_shares(seeded, cluster)
            cgaps[side] = _gap(clusters[side])

    def both(d: dict) -> dict:
        return {"left": d["left"], "right": d["right"], "mean": _mean(d["left"], d["right"])}

    report = {
        "seeds": int(np.unique(_pair_codes(sl, sr, int(n_right))).size),
        "edge_coverage": both(edge),
        "entity_coverage": both(entity),
        "degree_buckets": buckets,
        "degree_gap": both(gaps),
    }
    if clusters:
        report["clusters"] = clusters
        report["cluster_gap"] = both(cgaps)
    return report


def judged_precision(seed_left, seed_right, gold_left, gold_right) -> dict:
    """Precision over the seeds that gold can judge.

    A seed ``(l, r)`` is *judgeable* iff ``l`` is the left entity or ``r`` the right entity of
    some gold pair; a seed between two entities that appear in no gold pair may well be right
    (DBP15K lists 15,000 links among ~19,500 entities per side, and many unlisted entities have
    a counterpart with the very same name), so plain precision counts it as an error.  Returns
    ``{"judged": count, "precision": correct / judged (None if judged == 0)}``.
    """
    seed_left = np.asarray(seed_left, np.int64)
    seed_right = np.asarray(seed_right, np.int64)
    gold_left = np.asarray(gold_left, np.int64)
    gold_right = np.asarray(gold_right, np.int64)
    judged = np.isin(seed_left, gold_left) | np.isin(seed_right, gold_right)
    pr = seed_precision_recall(seed_left[judged], seed_right[judged], gold_left, gold_right)
    return {"judged": int(judged.sum()), "precision": pr["precision"]}
