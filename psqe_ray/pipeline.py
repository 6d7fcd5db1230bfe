"""Align and run: seeds -> downstream aligner -> ``alignment.parquet`` + ``metrics.json``, and the
one-command pipeline (encode -> seeds -> aligner -> ``report.json`` + ``report.html``).

Gold links are read only after the aligner is trained, to evaluate it; no setting or checkpoint
is chosen on them (there is one checkpoint: the last).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from psqe_ray import __version__
from psqe_ray.io.checkpoint import AlignCheckpoint
from psqe_ray.align.trainer import Aligner
from psqe_ray.config import PSQEConfig, fingerprint, reproducibility, to_dict
from psqe_ray.core.assignment import (CandidateGraph, MatchResult, candidate_graph, match,
                                      match_metrics, rerank_metrics)
from psqe_ray.core.alignment_quality import Vectors, alignment_metrics
from psqe_ray.core.ids import duplicates, out_of_range
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.search import Searcher
from psqe_ray.core.step_meter import StepMeter
from psqe_ray.core.train import joint_graph, model_inputs, resolve_device, torch_threads
from psqe_ray.inprocess import peak_rss_bytes
from psqe_ray.errors import ConfigError, DataError
from psqe_ray.io.dataset import Dataset, DatasetWriter
from psqe_ray.io.fs import StorageOptions, exists, join, read_bytes, read_json, resolve
from psqe_ray.io.load import load_pair

log = logging.getLogger(__name__)

TRAIN = "_train"  # under an align output: the aligner's checkpoint (and Ray Train's folders)

# fit(feats, graph, n_left, seed_left, seed_right) -> a fitted Aligner (the Ray Train path
# passes its own)
class AlignEngine:
    """Where the aligner's inputs are made and where it trains (:func:`run_align`'s
    ``engine``).  This one: in this process; :class:`psqe_ray.distributed.align.RayAlignEngine`
    on Ray (inputs as row blocks made by tasks, training on Ray Train)."""

    def __init__(self, cfg: PSQEConfig) -> None:
        self.cfg = cfg

    def inputs(self, ds: Dataset):
        """(pair, the generator that prepared the features, modality -> (left, right))."""
        pair = load_pair(ds)
        gen = SeedGenerator(self.cfg)
        mods, _ = gen.prepare(pair)
        return pair, gen, mods

    def fit(self, gen, mods, graph, n_left: int, seed_l: np.ndarray, seed_r: np.ndarray,
            checkpoint: AlignCheckpoint | None = None) -> Aligner:
        """The trained aligner; ``checkpoint``: where it saves its state and resumes from."""
        cfg = self.cfg
        with torch_threads(cfg.threads):
            return Aligner(cfg.align, cfg.seed, gen.searcher,
                           resolve_device(cfg.distributed.device)).fit(
                model_inputs(mods), graph, n_left, seed_l, seed_r, checkpoint=checkpoint)

    def topk(self, gen, left, right, k: int):
        """Every left entity's top-``k`` right entities (scores, ids): the search layer."""
        return gen.searcher.topk(left, right, k)

    def metrics(self, gen, left, right, gold) -> dict:
        """The ranking figures against the gold links (evaluation only)."""
        a = self.cfg.align
        return alignment_metrics(left, right, gold[0], gold[1], csls_k=a.csls_k,
                                 split_seed=a.split_seed, searcher=gen.searcher,
                                 vectors=self.vectors(gen))

    def vectors(self, gen) -> Vectors | None:
        """How the approximate evaluation reaches the vectors (None: arrays here)."""
        return None

    def nodes(self, gen) -> dict | None:
        """Per-node usage of the step (None: no Ray)."""
        return None


def align_settings(cfg: PSQEConfig) -> dict[str, Any]:
    """The configuration an alignment depends on: its features (modalities, feature settings,
    the seed of the missing-value fill), the ``align`` section and the training workers."""
    d = to_dict(cfg)
    d["align"] = {k: v for k, v in d["align"].items() if k != "checkpoint_every"}
    return {k: d[k] for k in ("modalities", "features", "seed", "align", "search", "threads")} | {
        "train_workers": cfg.distributed.train_workers}


def read_seeds(seeds_url: str, counts: dict[str, int], *,
               storage_options: StorageOptions = None) -> tuple[np.ndarray, np.ndarray]:
    """Accepted seed pairs from a ``psqe-ray seeds`` output folder or a seeds Parquet file.

    A file needs ``left_id`` and ``right_id`` (int); ``accepted`` (bool) is honoured when
    present.  Ids must lie in the dataset and appear once per side (seeds are one-to-one).
    """
    fs, path = resolve(seeds_url, storage_options)
    if fs.isdir(path):
        if not exists(fs, join(path, "seeds.parquet"), seeds_url):
            raise DataError(seeds_url, "a folder without seeds.parquet (expected the output of "
                                       "`psqe-ray seeds`, or a seeds Parquet file)")
        path, seeds_url = join(path, "seeds.parquet"), join(seeds_url, "seeds.parquet")
    elif not exists(fs, path, seeds_url):
        raise DataError(seeds_url, "no such file or folder")
    data = read_bytes(fs, path, seeds_url)  # counted in the driver's bytes read
    try:
        t = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # noqa: BLE001
        raise DataError(seeds_url, f"not a readable Parquet file: {' '.join(str(exc).split())}") from None
    missing = [c for c in ("left_id", "right_id") if c not in t.column_names]
    if missing:
        raise DataError(seeds_url, f"missing column(s) {missing}; has {t.column_names}")
    if "accepted" in t.column_names:
        t = t.filter(pc.fill_null(t.column("accepted"), False))
    out = []
    for col, side in (("left_id", "left"), ("right_id", "right")):
        c = t.column(col)
        if not pa.types.is_integer(c.type):
            raise DataError(seeds_url, f"column {col} must be integer, is {c.type}")
        if c.null_count:
            raise DataError(seeds_url, f"column {col} has {c.null_count} null(s)")
        ids = c.to_numpy().astype(np.int64)
        bad = out_of_range(ids, counts[side])
        if bad:
            raise DataError(seeds_url, f"{col} {bad[0]} is not a {side} entity of the dataset "
                                       f"(ids 0..{counts[side] - 1}); {bad[1]} such row(s)")
        dup = duplicates(ids)
        if len(dup):
            raise DataError(seeds_url, f"duplicate {col} {int(dup[0])} among the accepted "
                                       "seeds (seeds are one-to-one)")
        out.append(ids)
    if len(out[0]) < 2:
        raise DataError(seeds_url, f"{len(out[0])} accepted seed pair(s); the aligner needs at "
                                   "least 2")
    return out[0], out[1]


def alignment_table(left: np.ndarray, right: np.ndarray, k: int,
                    searcher: Searcher | None = None) -> pa.Table:
    """Every left entity's top-``k`` right candidates from the search layer (exact up to its
    threshold, IVF above), rank 1 first."""
    return topk_table(*(searcher or Searcher()).topk(left, right, k))


def topk_table(scores: np.ndarray, ids: np.ndarray) -> pa.Table:
    """alignment.parquet's rows from every left entity's top-k (scores, ids)."""
    n, kk = ids.shape
    return pa.table({
        "left_id": pa.array(np.repeat(np.arange(n, dtype=np.int64), kk)),
        "right_id": pa.array(ids.ravel().astype(np.int64)),
        "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)),
        "score": pa.array(scores.ravel().astype(np.float32)),
    })


def matches_table(m: MatchResult) -> pa.Table:
    """matches.parquet: one row per matched pair, best first (``score``: the balanced mass of
    the assignment, or the CSLS score for ``greedy``; ``similarity``: the aligner's cosine)."""
    return pa.table({"left_id": pa.array(m.left, pa.int64()),
                     "right_id": pa.array(m.right, pa.int64()),
                     "score": pa.array(m.share.astype(np.float32)),
                     "similarity": pa.array(m.similarity.astype(np.float32))})


def matching_summary(m: MatchResult, g: CandidateGraph, a, gold) -> dict[str, Any]:
    """metrics.json's ``matching``: how the assignment was solved and, when gold links exist,
    its precision / recall / F1 and the ranking of the balanced scores (evaluation only)."""
    out: dict[str, Any] = {"method": m.method, "matches": int(m.left.size),
                           "candidates": m.candidates, "dropped_as_dangling": m.dropped,
                           "candidates_per_entity": a.match_k}
    if m.method == "sinkhorn":
        out.update(temperature=a.match_temperature, iterations=a.match_iterations,
                   min_share=a.match_min_share)
    if gold is not None:
        out.update(match_metrics(m, gold[0], gold[1]))
        out["ranking"] = rerank_metrics(g, m.edge_share, gold[0], gold[1])
    return out


def aligned_samples(matches: MatchResult | None, top1, pair, a) -> dict[str, Any]:
    """report.json ``align.samples`` (:func:`psqe_ray.report.samples.sample_pairs`): from the
    one-to-one matches, or from every left entity's top-1 when matching is off."""
    from psqe_ray.report.samples import sample_pairs

    names = {"names_left": pair.left.names, "names_right": pair.right.names,
             "gold": pair.gold}
    if matches is not None:
        sinkhorn = matches.method == "sinkhorn"
        return sample_pairs(matches.left, matches.right, matches.share,
                            similarity=matches.similarity,
                            threshold=a.match_min_share if sinkhorn else None,
                            source=f"matches ({matches.method})",
                            score_name="balanced mass" if sinkhorn else "CSLS", **names)
    ids, scores = top1
    ok = np.flatnonzero(np.asarray(ids) >= 0)
    return sample_pairs(ok, np.asarray(ids)[ok], np.asarray(scores)[ok], source="top-1",
                        score_name="cosine", **names)


class TaskPeaks:
    """On Ray, ``{"worker_peak_rss_bytes": ...}`` for the step just done (search, matching,
    evaluation).  Their tasks keep one running maximum (the generator's ``align`` resources),
    so a step gets it only when it raised that maximum; otherwise (or in-process): ``{}``."""

    def __init__(self, gen) -> None:
        self.gen, self.seen = gen, 0

    def __call__(self) -> dict[str, int]:
        now = int(((getattr(self.gen, "resources_", None) or {}).get("align") or {})
                  .get("worker_peak_rss_bytes") or 0)
        if now <= self.seen:
            return {}
        self.seen = now
        return {"worker_peak_rss_bytes": now}


def run_align(dataset_url: str, seeds_url: str, out_url: str, cfg: PSQEConfig, *,
              storage_options: StorageOptions = None,
              engine: AlignEngine | None = None) -> dict[str, Any]:
    """Train ``cfg.align.recipe`` on the seeds at ``seeds_url``; write ``out_url``/
    alignment.parquet and metrics.json atomically.  Returns the metrics (or the existing ones
    when ``out_url`` already holds this exact result)."""
    t0 = time.perf_counter()
    cfg.check()
    ds = Dataset(dataset_url, storage_options=storage_options)
    counts = ds.entity_counts()
    seed_l, seed_r = read_seeds(seeds_url, counts, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": align_settings(cfg),
                      "seeds": fingerprint([seed_l.tolist(), seed_r.tolist()]),
                      "code": __version__, **({"engine": "ray"} if engine else {})})
    with DatasetWriter(out_url, stage=f"align-{cfg.align.recipe}", fingerprint=fp,
                       storage_options=storage_options, require_graph=False,
                       entity_counts=counts, keep=(TRAIN,),
                       inputs={"dataset": ds.manifest["fingerprint"]}) as writer:
        if writer.committed:
            log.info("%s already holds this alignment (fingerprint %s)", out_url, fp)
            return read_json(join(out_url, "metrics.json"), storage_options)
        engine = engine or AlignEngine(cfg)
        profile: list[dict] = []  # report: seconds and peak memory per step
        try:
            with StepMeter() as meter:
                pair, gen, mods = engine.inputs(ds)
            profile.append({"step": "inputs", **meter.record()})
        except ValueError as exc:
            raise ConfigError(f"{dataset_url}: {exc}") from None
        task_peak = TaskPeaks(gen)
        graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
        log.info("align %s: %d seeds, modalities %s + structure", cfg.align.recipe, len(seed_l),
                 gen.modalities_)
        checkpoint = AlignCheckpoint(join(out_url, TRAIN, "aligner.ckpt"), fp,
                                     cfg.align.checkpoint_every, storage_options)
        with StepMeter() as meter:
            aligner = engine.fit(gen, mods, graph, pair.left.n, seed_l, seed_r, checkpoint)
        worker = getattr(aligner, "report_extras_", {}).get("worker_peak_rss_bytes")  # Ray
        profile.append({"step": "train", **meter.record(),
                        **({"worker_peak_rss_bytes": int(worker)} if worker else {})})
        left, right = aligner.embeddings_
        a = cfg.align
        t = time.perf_counter()
        with StepMeter() as meter:
            k = a.topk if a.matching == "off" else max(a.topk, a.match_k)
            lr = engine.topk(gen, left, right, k)
            table = topk_table(lr[0][:, :a.topk], lr[1][:, :a.topk])
        search_seconds = time.perf_counter() - t
        profile.append({"step": "search", **meter.record(), **task_peak()})
        matches = graph_ = None
        top1 = None if a.matching != "off" else (lr[1][:, 0], lr[0][:, 0])
        t = time.perf_counter()
        if a.matching != "off":
            with StepMeter() as meter:
                rl = engine.topk(gen, right, left, a.match_k)
                graph_ = candidate_graph((lr[0][:, :a.match_k], lr[1][:, :a.match_k]), rl,
                                         a.csls_k)
                del rl
                matches = match(graph_, method=a.matching, temperature=a.match_temperature,
                                iterations=a.match_iterations, min_share=a.match_min_share)
            profile.append({"step": "matching", **meter.record(), **task_peak()})
            log.info("align %s: %d one-to-one matches (%s on %d candidate pairs; %d left out "
                     "as dangling)", a.recipe, len(matches.left), a.matching,
                     matches.candidates, matches.dropped)
        del lr
        match_seconds = time.perf_counter() - t
        metrics: dict[str, Any] = {"hits@1": None, "hits@10": None, "mrr": None}
        t = time.perf_counter()
        with StepMeter() as meter:
            if pair.gold is not None:  # evaluation only: after training, nothing chosen on it
                metrics = engine.metrics(gen, left, right, pair.gold)
        eval_seconds = time.perf_counter() - t
        profile.append({"step": "evaluation", **meter.record(), **task_peak()})
        metrics["samples"] = aligned_samples(matches, top1, pair, a)
        if matches is not None:
            metrics["matching"] = matching_summary(matches, graph_, a, pair.gold)
            metrics["matching"]["seconds"] = round(match_seconds, 3)
        del graph_
        metrics.update({
            "recipe": cfg.align.recipe,
            "dataset": dataset_url, "seeds": seeds_url,
            "seeds_used": int(len(seed_l)),
            "pairs_added": [int(x) for x in aligner.added_],
            "train_steps": int(aligner.steps_),
            "modalities": list(aligner.modality_weights_),
            "modality_weights": aligner.modality_weights_,
            "skipped_modalities": gen.skipped_,
            "modality_signal": getattr(gen, "signal_", {}),
            "structure": aligner.structure_,
            "smoothing": aligner.smoothing_,
            "gold": None if pair.gold is None else int(len(pair.gold[0])),
            "entities": counts,
            "train_seconds": round(aligner.train_seconds_, 3),
            "search_seconds": round(search_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "seconds_total": round(time.perf_counter() - t0, 3),
            # this process's peak so far (the pipeline job: seeds and aligner together)
            "driver_peak_rss_bytes": peak_rss_bytes(),
            "profile": profile,
            "align_config": to_dict(cfg.align),
            "reproducibility": reproducibility(cfg),
            "fingerprint": fp, "code_version": __version__,
            **getattr(aligner, "report_extras_", {}),
        })
        nodes = engine.nodes(gen)
        if nodes is not None:  # the Ray engine: every task and actor of this step, per node
            metrics["nodes"] = nodes
        writer.write("alignment", table, filename="alignment.parquet")
        if matches is not None:
            writer.write("matches", matches_table(matches), filename="matches.parquet")
        writer.put_file("metrics.json", json.dumps(metrics, indent=1).encode(), fixed=True)
        writer.commit(meta={"dataset": dataset_url, "seeds": seeds_url,
                            "recipe": cfg.align.recipe})
        checkpoint.clear()
    log.info("align %s: hits@1 %s, hits@10 %s, mrr %s, %.1f s", cfg.align.recipe,
             metrics["hits@1"], metrics["hits@10"], metrics["mrr"], metrics["seconds_total"])
    return metrics


def run_pipeline(dataset_url: str, out_url: str, cfg: PSQEConfig, *,
                 storage_options: StorageOptions = None,
                 encode: Callable[[], list[dict]] | None = None,
                 seeds: Callable[[str], dict] | None = None,
                 align: Callable[[str, str], dict] | None = None,
                 extras: Callable[[dict], dict] | None = None) -> dict[str, Any]:
    """encode (``encode()`` -> the encoders' results, when given) -> seeds into
    ``out_url``/seeds -> aligner into ``out_url``/align -> ``report.json`` + ``report.html`` at
    ``out_url``.

    ``seeds(out)`` / ``align(seeds_url, out)`` run those steps (default: in-process
    :func:`psqe_ray.inprocess.run_seeds` and :func:`run_align`; the job passes the Ray ones);
    ``extras(report)`` returns keys to add to the report (the job's per-node ``nodes``).
    A rerun reuses the committed seeds and alignment.
    """
    from psqe_ray.inprocess import run_seeds
    from psqe_ray.report.html import render_html

    t0 = time.perf_counter()
    cfg.check()
    seeds = seeds or (lambda out: run_seeds(dataset_url, out, cfg,
                                            storage_options=storage_options))
    align = align or (lambda s, out: run_align(dataset_url, s, out, cfg,
                                               storage_options=storage_options))
    # encoding first (it updates the dataset, and is skipped when up to date): the run is
    # named by the dataset as the seeds will read it
    t = time.perf_counter()
    with StepMeter() as encode_meter:
        encoded = encode() if encode else []
    seconds = {"encode": round(time.perf_counter() - t, 3) if encode else 0.0}
    ds = Dataset(dataset_url, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": to_dict(cfg),
                      "code": __version__})
    with DatasetWriter(out_url, stage="run", fingerprint=fp, storage_options=storage_options,
                       require_graph=False, keep=("seeds", "align"),
                       inputs={"dataset": ds.manifest["fingerprint"]}) as writer:
        if writer.committed:
            return read_json(join(out_url, "report.json"), storage_options)
        t = time.perf_counter()
        seed_report = seeds(join(out_url, "seeds"))
        seconds["seeds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        metrics = align(join(out_url, "seeds"), join(out_url, "align"))
        seconds["align"] = round(time.perf_counter() - t, 3)
        seconds["total"] = round(time.perf_counter() - t0, 3)
        report = {"pipeline": "psqe-ray run", "dataset": dataset_url, "out": out_url,
                  "recipe": cfg.align.recipe, "seconds": seconds, "seeds": seed_report,
                  "align": metrics, "config": to_dict(cfg), "code_version": __version__,
                  "reproducibility": reproducibility(cfg),
                  "outputs": {"seeds": join(out_url, "seeds", "seeds.parquet"),
                              "alignment": join(out_url, "align", "alignment.parquet")}}
        if encoded:
            report["encode"] = encoded
        if encode:  # the steps of the seeds and the aligner: their own reports' ``profile``
            report["profile"] = [{"step": "encode", **encode_meter.record()}]
        if extras is not None:
            report.update(extras(report))
        writer.put_file("report.json", json.dumps(report, indent=1, default=str).encode(),
                        fixed=True)
        writer.put_file("report.html", render_html(report).encode(), fixed=True)
        writer.commit(meta={"dataset": dataset_url, "recipe": cfg.align.recipe})
    return report
