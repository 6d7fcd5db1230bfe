"""The in-process path: dataset URL -> seeds (PSQE or a baseline) -> ``seeds.parquet`` + report.

This is the reference the distributed path must match, and the fast path for tests.  Gold
links are read only after the seeds are fixed, to evaluate them.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from typing import Any

import numpy as np
import pyarrow as pa

from psqe_ray import __version__
from psqe_ray.config import PSQEConfig, fingerprint, reproducibility, seed_settings
from psqe_ray.core.seed_quality import coverage_report, judged_precision, seed_precision_recall
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.errors import ConfigError
from psqe_ray.io.dataset import Dataset, DatasetWriter
from psqe_ray.io.fs import StorageOptions, join, read_json
from psqe_ray.io.load import load_pair

log = logging.getLogger(__name__)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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


def run_seeds(dataset_url: str, out_url: str, cfg: PSQEConfig, *,
              storage_options: StorageOptions = None, engine=None) -> dict[str, Any]:
    """Generate seeds for the dataset at ``dataset_url``; write ``out_url``/seeds.parquet and
    ``out_url``/report.json atomically.  Returns the report (or the existing one).

    ``engine(cfg, dataset_fingerprint)`` makes the generator (default: the in-process
    :class:`SeedGenerator`; the Ray path passes its own, which commits stages under
    ``out_url/stages/``).
    """
    t0 = time.perf_counter()
    cfg.check()
    ds = Dataset(dataset_url, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": seed_settings(cfg),
                      "code": __version__, **({"engine": "ray"} if engine else {})})
    counts = ds.entity_counts()
    with DatasetWriter(out_url, stage=f"seeds-{cfg.method}", fingerprint=fp,
                       storage_options=storage_options, require_graph=False,
                       entity_counts=counts, keep=("stages",),
                       inputs={"dataset": ds.manifest["fingerprint"]}) as writer:
        if writer.committed:
            log.info("%s already holds these seeds (fingerprint %s)", out_url, fp)
            return read_json(join(out_url, "report.json"), storage_options)
        t = time.perf_counter()
        gen = engine(cfg, ds.manifest["fingerprint"]) if engine else SeedGenerator(cfg)
        # the Ray engine loads the graph only (its tasks read the feature tables)
        pair = gen.load(ds) if engine else load_pair(ds)
        load_seconds = time.perf_counter() - t
        try:
            gen.fit(pair)
        except ValueError as exc:
            raise ConfigError(f"{dataset_url}: {exc}") from None
        quality = evaluate(gen, pair)
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
            "engine": "ray" if engine else "in-process",
            "load_seconds": round(load_seconds, 3),
            "seconds_total": round(time.perf_counter() - t0, 3),
            "peak_rss_bytes": peak_rss_bytes(),
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
        writer.write("seeds", seeds_table(gen), filename="seeds.parquet")
        writer.put_file("report.json", json.dumps(report, indent=1, default=str).encode(),
                        fixed=True)
        writer.commit(meta={"dataset": dataset_url, "method": cfg.method})
    log.info("%s: %d seeds, precision %s, %.1f s", cfg.method, report["seeds"]["count"],
             report["seeds"]["precision"], report["seconds_total"])
    return report
