"""A few aligned pairs with their names, for the report (metrics.json / report.json
``align.samples``): the best, the borderline ones (scores nearest the acceptance threshold) and,
when gold links exist, wrong ones.  Small by design (``per`` rows each), so that report.html
stays a pure function of report.json.  Gold links only label rows here (evaluation only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from psqe_ray.core.assignment import judge_pairs

MAX_NAME = 80  # characters of a name kept in the report


def _name(names: Sequence | None, i: int) -> str | None:
    if names is None or not 0 <= i < len(names) or names[i] is None:
        return None
    s = str(names[i])
    return s if len(s) <= MAX_NAME else s[:MAX_NAME - 1] + "…"


def sample_pairs(left: np.ndarray, right: np.ndarray, score: np.ndarray, *,
                 similarity: np.ndarray | None = None, threshold: float | None = None,
                 names_left: Sequence | None = None, names_right: Sequence | None = None,
                 gold: tuple[np.ndarray, np.ndarray] | None = None, source: str = "matches",
                 score_name: str = "score", per: int = 5) -> dict[str, Any]:
    """The report entry for the pairs ``left[i] -> right[i]`` with ``score[i]``.

    ``best``: the ``per`` highest scores; ``borderline``: the ``per`` scores nearest
    ``threshold`` (None: the lowest scores, the pairs the aligner was least sure of);
    ``wrong`` (gold given, else None): the ``per`` highest-scored pairs that a gold link
    contradicts (its left or right entity has another gold partner).  Ties go to the smaller
    left id.  Each row: ``left_id``, ``right_id``, ``left_name``, ``right_name``, ``score``,
    ``similarity`` (or None), ``verdict`` (``correct`` / ``wrong`` / ``unjudged``, None without
    gold) and, for a wrong pair, ``gold_right_id`` / ``gold_right_name`` (the left entity's gold
    partner, None when only the right entity is listed).
    """
    left = np.asarray(left, np.int64)
    right = np.asarray(right, np.int64)
    score = np.asarray(score, np.float64)
    verdict = partner = None
    if gold is not None:
        correct, judged, partner = judge_pairs(left, right, gold[0], gold[1])
        verdict = np.where(correct, "correct", np.where(judged, "wrong", "unjudged"))

    def rows(idx: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for i in idx.tolist():
            a, b = int(left[i]), int(right[i])
            row = {"left_id": a, "right_id": b, "left_name": _name(names_left, a),
                   "right_name": _name(names_right, b), "score": round(float(score[i]), 6),
                   "similarity": None if similarity is None else
                   round(float(similarity[i]), 6),
                   "verdict": None if verdict is None else str(verdict[i])}
            if row["verdict"] == "wrong":
                g = int(partner[a])
                row["gold_right_id"] = g if g >= 0 else None
                row["gold_right_name"] = _name(names_right, g) if g >= 0 else None
            out.append(row)
        return out

    by_score = np.lexsort((left, -score))
    if threshold is None:
        near = np.lexsort((left, score))
    else:
        near = np.lexsort((left, np.abs(score - float(threshold))))
    wrong = None
    if verdict is not None:
        wrong = rows(by_score[verdict[by_score] == "wrong"][:per])
    return {"source": source, "score": score_name, "threshold": threshold,
            "pairs": int(len(left)), "best": rows(by_score[:per]),
            "borderline": rows(near[:per]), "wrong": wrong}
