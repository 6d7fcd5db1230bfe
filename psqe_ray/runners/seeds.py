"""The seed runner: dataset URL -> seeds (PSQE or a baseline) -> ``seeds.parquet`` + ``report.json``.

The work runs where the engine says (:mod:`psqe_ray.runners.engine`: in this process, or on
Ray).  Gold links are read only after the seeds are fixed, to evaluate them (seed quality:
:mod:`psqe_ray.core.seed_quality`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa

from psqe_ray import __version__
from psqe_ray.config import PSQEConfig, fingerprint, reproducibility, seed_settings
from psqe_ray.core.seed_quality import coverage_report, judged_precision, seed_precision_recall
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.step_meter import StepMeter, high_water_bytes
from psqe_ray.errors import ConfigError
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions
from psqe_ray.runners.engine import Engine
from psqe_ray.runners.output import StepOutput

log = logging.getLogger(__name__)


def seeds_table(gen: SeedGenerator) -> pa.Table:
    """Accepted seeds (list order) followed by rejected candidates with their reason."""
    l, r, s, src = gen.seeds_
    rej = gen.table_.arrays()
    n_acc, n_rej = len(l), len(rej["left"])
    return pa.table({
        "left_id": pa.array(np.concatenate([l, rej["left"]]).astype(np.int64)),
        "right_id": pa.array(np.concatenate([r, rej["right"]]).astype(np.int64)),
        "score": pa.array(np.concatenate([s, rej["score"]]).astype(np.float32)),
        "source": pa.array(list(src) + list(rej["source"]), pa.string()),
        "stage": pa.array(list(src) + list(rej["stage"]), pa.string()),
        "accepted": pa.array([True] * n_acc + [False] * n_rej),
        "reason": pa.array([None] * n_acc + list(rej["reason"]), pa.string()),
    })


def evaluate(gen: SeedGenerator, pair) -> dict[str, Any]:
    """Seed quality after the fact: precision/recall overall and per stage, coverage."""
    l, r, _, _ = gen.seeds_
    gold = pair.gold
    gl, gr = gold if gold is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    pr = seed_precision_recall(l, r, gl, gr)
    judged = judged_precision(l, r, gl, gr)
    if gold is None:
        pr["precision"] = None
        pr["recall"] = None
        pr["correct"] = None
        judged = {"judged": None, "precision": None}
    clusters = gen.clusters_ or (None, None)
    coverage = coverage_report(l, r, pair.left.n, pair.right.n,
                               (pair.left.heads, pair.left.tails),
                               (pair.right.heads, pair.right.tails),
                               cluster_left=clusters[0], cluster_right=clusters[1])
    stages = []
    for st in gen.stages_:
        entry = dict(st)
        if st["name"] in gen.stage_sets_ and gold is not None:
            sl, sr = gen.stage_sets_[st["name"]]
            entry["precision"] = seed_precision_recall(sl, sr, gl, gr)["precision"]
            entry["judged_precision"] = judged_precision(sl, sr, gl, gr)["precision"]
        else:
            entry["precision"] = None
        stages.append(entry)
    by_source = {}
    if gold is not None:
        for name in sorted(set(gen.seeds_[3].tolist())):
            m = gen.seeds_[3] == name
            by_source[name] = seed_precision_recall(l[m], r[m], gl, gr)
    return {"seeds": {"count": pr["count"], "correct": pr["correct"],
                      "precision": pr["precision"], "recall": pr["recall"],
                      "judged": judged["judged"], "judged_precision": judged["precision"],
                      "by_source": by_source},
            "coverage": coverage, "stages": stages}


# the report's UVP baseline at PSQE's size gathers the pivot modality on one worker (Ray) or
# holds it here: above this many entities on a side it is not computed
BASELINE_MAX_ENTITIES = 100_000


def _set_figures(left: np.ndarray, right: np.ndarray, pair, coverage: dict | None = None
                 ) -> dict[str, Any]:
    """A seed set's figures for the PSQE-vs-UVP comparison (gold read: evaluation only)."""
    gl, gr = pair.gold
    pr = seed_precision_recall(left, right, gl, gr)
    if coverage is None:
        coverage = coverage_report(left, right, pair.left.n, pair.right.n,
                                   (pair.left.heads, pair.left.tails),
                                   (pair.right.heads, pair.right.tails))
    return {"count": int(len(left)), "precision": pr["precision"], "recall": pr["recall"],
            "judged_precision": judged_precision(left, right, gl, gr)["precision"],
            **{k: (coverage.get(k) or {}).get("mean")
               for k in ("edge_coverage", "entity_coverage", "degree_gap")}}


def uvp_comparison(gen: SeedGenerator, pair, quality: dict[str, Any]) -> dict[str, Any] | None:
    """PSQE's seeds against UVP's at the same count (report.json ``uvp_comparison``), when the
    run made PSQE seeds and the dataset has gold links: evaluation only, the seeds written are
    PSQE's whatever this says.  Returns None when there is nothing to compare; a dict with
    ``skipped`` (why) when the pair is too large for the baseline."""
    if gen.config.method != "psqe" or pair.gold is None:
        gen.release_baseline()
        return None
    n = len(gen.seeds_[0])
    if max(pair.left.n, pair.right.n) > BASELINE_MAX_ENTITIES:
        gen.release_baseline()
        return {"skipped": f"more than {BASELINE_MAX_ENTITIES:,} entities on a side"}
    base = gen.uvp_baseline(n) if n else gen.release_baseline()
    if base is None:
        return None
    pivot, ul, ur, _ = base
    return {"count": n, "pivot": pivot,
            "psqe": _set_figures(gen.seeds_[0], gen.seeds_[1], pair, quality["coverage"]),
            "uvp": _set_figures(ul, ur, pair)}


def _profile(gen: SeedGenerator, report: dict[str, Any], load: dict,
             evaluation: dict) -> list[dict]:
    """report.json ``profile``: seconds and peak memory of every step of the seed run (this
    process's peak: the driver's on Ray, where ``worker_peak_rss_bytes`` is the largest peak
    of the step's tasks and actors, when they report one)."""
    resources = report.get("resources") or {}
    resumed = set(report.get("resumed_stages") or [])
    out = [{"step": "load", **load}]
    for entry in getattr(gen, "profile_", []):
        entry = dict(entry)
        if entry["step"] in resumed:
            entry["resumed"] = True
        else:
            worker = (resources.get(entry["step"]) or {}).get("worker_peak_rss_bytes")
            if worker:
                entry["worker_peak_rss_bytes"] = int(worker)
        out.append(entry)
    out.append({"step": "evaluation", **evaluation})
    return out


def run_seeds(dataset_url: str, out_url: str, cfg: PSQEConfig, *,
              storage_options: StorageOptions = None,
              engine: Engine | None = None) -> dict[str, Any]:
    """Generate seeds for the dataset at ``dataset_url``; write ``out_url``/seeds.parquet and
    ``out_url``/report.json atomically.  Returns the report (or the existing one).

    ``engine``: where the work runs (default: this process; the Ray engine's generator commits
    each stage under ``out_url/stages/`` and a rerun continues from them).
    """
    engine = engine or Engine()
    with engine.session():
        return _run_seeds(dataset_url, out_url, cfg, storage_options, engine)


def _run_seeds(dataset_url: str, out_url: str, cfg: PSQEConfig,
               storage_options: StorageOptions, engine: Engine) -> dict[str, Any]:
    engine.start_step()
    t0 = time.perf_counter()
    cfg.check()
    ds = Dataset(dataset_url, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": seed_settings(cfg),
                      "code": __version__, **engine.identity()})
    counts = ds.entity_counts()
    with StepOutput(out_url, stage=f"seeds-{cfg.method}", fingerprint=fp, result="report.json",
                    what="these seeds", storage_options=storage_options, keep=("stages",),
                    entity_counts=counts, inputs={"dataset": ds.manifest["fingerprint"]}) as out:
        if out.reused is not None:
            return out.reused
        t = time.perf_counter()
        with StepMeter() as load_meter:
            gen, pair = engine.seed_inputs(cfg, out_url, ds.manifest["fingerprint"], ds,
                                           storage_options)
        load_seconds = time.perf_counter() - t
        try:
            gen.fit(pair)
        except ValueError as exc:
            raise ConfigError(f"{dataset_url}: {exc}") from None
        with StepMeter() as eval_meter:  # after the seeds are fixed: gold read from here on
            quality = evaluate(gen, pair)
            comparison = uvp_comparison(gen, pair, quality)
        report = {
            "method": cfg.method,
            "modalities": gen.modalities_,
            "skipped_modalities": gen.skipped_,
            "modality_signal": getattr(gen, "signal_", {}),
            "feature_sources": getattr(gen, "feature_sources_", {}),
            "dataset": dataset_url,
            "entities": counts,
            "gold": None if pair.gold is None else int(len(pair.gold[0])),
            **quality,
            "engine": engine.name,
            "load_seconds": round(load_seconds, 3),
            "seconds_total": round(time.perf_counter() - t0, 3),
            "peak_rss_bytes": high_water_bytes(),
            "config": seed_settings(cfg),
            "reproducibility": reproducibility(cfg),
            "fingerprint": fp,
            "code_version": __version__,
        }
        if getattr(gen, "pivot_", None):
            report["pivot"] = gen.pivot_
        if getattr(gen, "anchor_", None):
            report["anchor"] = gen.anchor_
        report.update(gen.report_extras())
        if gen.clusters_ is not None:
            report["clusters"] = int(len(gen.cluster_budgets_))
        report["budget"] = getattr(gen, "budget_", None)
        if comparison is not None:
            report["uvp_comparison"] = comparison
        report["profile"] = _profile(gen, report, load_meter.record(), eval_meter.record())
        out.commit(report, tables=[("seeds", seeds_table(gen), "seeds.parquet")],
                   meta={"dataset": dataset_url, "method": cfg.method})
    log.info("%s: %d seeds, precision %s, %.1f s", cfg.method, report["seeds"]["count"],
             report["seeds"]["precision"], report["seconds_total"])
    return report
