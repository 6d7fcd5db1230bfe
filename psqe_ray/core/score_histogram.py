"""Score histograms of the candidate pairs a seed stage accepted and rejected (report.json).

Every histogram uses one fixed grid: ``BINS`` bins of width ``WIDTH`` over the cosine range
``[LO, LO + BINS * WIDTH)`` = [-1, 1); a score outside it (a rounding hair above 1, say) is
counted in the nearest end bin.  A fixed grid makes counts additive: the partial counts of Ray
tasks or clusters sum to the whole stage's, so both engines report the same figures.  Only
counts are kept, never the scores.

In report.json a stage's histogram is trimmed to the bins from the first to the last non-empty
one (either kind): ``{"start": <left edge of the first kept bin>, "width": 0.02,
"accepted": [counts], "rejected": [counts] or None}`` (None: the stage does not record its
rejected candidates).
"""

from __future__ import annotations

import numpy as np

LO = -1.0
WIDTH = 0.02
BINS = 100


def score_counts(scores: np.ndarray) -> np.ndarray:
    """int64 (BINS,): how many of ``scores`` fall in each bin of the fixed grid (non-finite
    scores are not counted)."""
    s = np.asarray(scores, np.float64).ravel()
    s = s[np.isfinite(s)]
    idx = np.clip(np.floor((s - LO) / WIDTH), 0, BINS - 1).astype(np.int64)
    return np.bincount(idx, minlength=BINS).astype(np.int64)


def histogram_record(accepted: np.ndarray, rejected: np.ndarray | None) -> dict:
    """The report entry of one stage from its full-grid counts (``rejected`` None: not
    recorded)."""
    acc = np.asarray(accepted, np.int64)
    rej = None if rejected is None else np.asarray(rejected, np.int64)
    if rej is not None and (rej < 0).any():
        raise ValueError("negative rejected count")
    total = acc + (rej if rej is not None else 0)
    nz = np.flatnonzero(total)
    a, b = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
    return {"start": round(LO + a * WIDTH, 6), "width": WIDTH,
            "accepted": acc[a:b].tolist(),
            "rejected": None if rej is None else rej[a:b].tolist()}
