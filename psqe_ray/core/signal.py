"""Does a modality carry a signal shared by both graphs?  A test without gold links.

A modality is only worth fusing when an entity's vector says something about *which* entity
of the other graph is its partner.  Names taken from opaque identifiers on one side (Wikidata
Q-numbers, P-ids) say nothing, yet they yield vectors, similarities and seeds like any other
modality, and poison the run silently.

The test asks whether an entity's best match in the other graph is closer than chance allows.
For ``sample`` left entities (a seeded draw) it searches their best right entity and keeps the
score.  The baseline searches the same queries with their coordinates shuffled among columns
of similar weight (columns ranked by mean magnitude over the queries, shuffled within runs of
8): the same norms, sparsity and per-dimension frequencies, the same right side with its hubs,
but no coordinate meaning the same thing on both sides.  With a shared signal, partners exist
and the observed best scores are higher; without one, both are the best of the same kind of
noise.  The effect is the probability that an observed best score beats a baseline one (the
Mann-Whitney AUC, ties counted half), with its standard error under no difference,
``sqrt((2n + 1) / (12 n^2))`` for two samples of n.  A modality is dropped only on evidence
that its signal is negligible: when even the AUC's upper bound (3 standard errors above it)
is below ``0.5 + min_effect`` (0.55: a best match that beats a shuffled one in at most 55 % of
draws is no signal worth fusing).  A modality whose true AUC is 0.55 or more is dropped with
a chance of about 0.13 % (one-sided, normal approximation).  With few entities the bound is wide and a weak modality is kept: nothing is dropped
for lack of evidence.  ``z`` (the AUC's distance from 1/2 in standard errors) is reported too.
Both thresholds are a significance level and an effect size fixed a priori, not fitted to any
pair.

Measured (``benchmarks/signal_real.py``, 2,000 queries): real names AUC .998-.999 on DBP15K
and OpenEA, relation and attribute bags .64 and .86 on OpenEA; names replaced by opaque ids on
one side .48-.50 (upper bound at most .53: dropped).

A plain shuffle of all columns would be the wrong baseline: it moves a bag query onto rare
dimensions, where whatever matches stands out.  What the test does not see: two graphs whose
features come from one encoder but describe unrelated entities share a feature *space*, and
pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["matched_permutation", "signal_test"]

SAMPLE = 2000      # left entities sampled per modality
Z_BOUND = 3.0      # standard errors of the AUC's upper bound
MIN_EFFECT = 0.05  # an AUC below 0.5 + this is a negligible signal
GROUP = 8          # columns of similar weight shuffled together in the baseline


def matched_permutation(q: np.ndarray, rng: np.random.Generator, group: int = GROUP
                        ) -> np.ndarray:
    """A permutation of ``q``'s columns that only swaps columns of similar weight: columns are
    ranked by their mean magnitude over the rows (ties: by index) and shuffled within
    consecutive runs of ``group``.  Shared meaning is gone, but a frequent bag dimension stays
    frequent (a plain shuffle would move queries onto rare dimensions, where any match stands
    out)."""
    d = q.shape[1]
    order = np.lexsort((np.arange(d), -np.abs(q).mean(axis=0)))
    perm = np.arange(d)
    for a in range(0, d, group):
        run = order[a:a + group]
        perm[run] = run[rng.permutation(len(run))]
    return perm


def _auc(a: np.ndarray, b: np.ndarray) -> float:
    """P(a > b) + P(a == b) / 2 over all pairs, from the pooled mid-ranks."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([a, b]))
    u = r[:len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def signal_test(rows: Callable[[np.ndarray], np.ndarray],
                search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                n_left: int, n_right: int, seed: int, *, sample: int = SAMPLE,
                z_bound: float = Z_BOUND, min_effect: float = MIN_EFFECT) -> dict:
    """The test for one modality (module docstring).

    rows(ids) -> the prepared left rows ``ids`` (float32 (len(ids), d)); search(q, k) -> the
    (scores, ids) of each row of ``q`` among the prepared right rows.  Returns ``auc``, ``z``,
    ``upper`` (the AUC's upper bound), ``sample`` and ``signal`` (bool: upper >= 0.5 +
    min_effect).  Too few entities to judge (fewer than 20 queries or 2 right entities) count
    as a signal."""
    n = min(sample, n_left)
    if n < 20 or n_right < 2:
        return {"auc": None, "z": None, "upper": None, "sample": n, "signal": True}
    rng = np.random.default_rng([seed, 0x5167])
    ids = np.sort(rng.choice(n_left, n, replace=False))
    q = np.ascontiguousarray(rows(ids), np.float32)
    perm = matched_permutation(q, rng)
    # one search for both: the queries, then the same queries with permuted coordinates
    scores, _ = search(np.concatenate([q, q[:, perm]]), 1)
    best = scores[:, 0].astype(np.float64)
    observed, baseline = best[:n], best[n:]
    auc = _auc(observed, baseline)
    se = float(np.sqrt((2 * n + 1) / (12.0 * n * n)))
    upper = min(1.0, auc + z_bound * se)
    return {"auc": round(auc, 4), "z": round((auc - 0.5) / se, 2), "upper": round(upper, 4),
            "sample": n, "signal": bool(upper >= 0.5 + min_effect)}
