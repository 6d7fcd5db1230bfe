"""The align runner: seeds -> downstream aligner -> ``alignment.parquet`` (every left entity's
top candidates), ``matches.parquet`` (the one-to-one alignment) + ``metrics.json``.

The work runs where the engine says (:mod:`psqe_ray.runners.engine`).  Gold links are read only
after the aligner is trained, to evaluate it (alignment quality:
:mod:`psqe_ray.core.alignment_quality`); no setting or checkpoint is chosen on them (there is one
checkpoint: the last).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from psqe_ray import __version__
from psqe_ray.config import PSQEConfig, fingerprint, reproducibility, to_dict
from psqe_ray.core.assignment import (CandidateGraph, MatchResult, assign, balanced_ranking,
                                      csls_ranking, match_metrics, rerank_metrics, sinkhorn)
from psqe_ray.core.ids import duplicates, out_of_range
from psqe_ray.core.search import Searcher
from psqe_ray.core.step_meter import StepMeter, high_water_bytes
from psqe_ray.core.train import joint_graph
from psqe_ray.errors import ConfigError, DataError
from psqe_ray.io.checkpoint import AlignCheckpoint
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions, exists, join, read_bytes, resolve
from psqe_ray.runners.engine import Engine
from psqe_ray.runners.output import StepOutput

log = logging.getLogger(__name__)

TRAIN = "_train"  # under an align output: the aligner's checkpoint (and Ray Train's folders)


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


def topk_table(scores: np.ndarray, ids: np.ndarray,
               similarity: np.ndarray | None = None) -> pa.Table:
    """alignment.parquet's rows from every left entity's top-k (scores, ids): ``score`` is the
    ranking's score (CSLS or cosine), ``similarity`` the aligner's cosine (default: the
    scores themselves, for the plain ranking)."""
    n, kk = ids.shape
    sim = scores if similarity is None else similarity
    return pa.table({
        "left_id": pa.array(np.repeat(np.arange(n, dtype=np.int64), kk)),
        "right_id": pa.array(ids.ravel().astype(np.int64)),
        "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)),
        "score": pa.array(scores.ravel().astype(np.float32)),
        "similarity": pa.array(sim.ravel().astype(np.float32)),
    })


def ranked(lr, rl, a, graph: CandidateGraph | None = None, share: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alignment.parquet's (scores, ids, similarity) under ``a.ranking`` (the ``align``
    settings): the balanced scores of the candidate graph (``graph``, ``share``), CSLS from
    both directions' lists (:func:`~psqe_ray.core.assignment.csls_ranking`) or the plain lists
    cut to ``a.topk``."""
    if a.ranking == "balanced":
        return balanced_ranking(graph, share, a.topk)
    if a.ranking == "csls":
        return csls_ranking(lr, rl, a.topk, a.csls_k)
    return lr[0][:, :a.topk], lr[1][:, :a.topk], lr[0][:, :a.topk]


def balanced_share(graph: CandidateGraph, m: MatchResult, a) -> np.ndarray:
    """The balanced (Sinkhorn) score of every candidate edge: the matching's own, or (greedy
    matching) balanced here with the same settings."""
    if m.method == "sinkhorn":
        return m.edge_share
    return sinkhorn(graph, a.match_temperature, a.match_iterations)


def set_headline(metrics: dict[str, Any], a, balanced: dict | None) -> None:
    """metrics.json's headline Hits@k / MRR: the ranking alignment.parquet holds
    (``a.ranking``); ``balanced``: the Hits@k of the balanced scores (``rerank_metrics``)."""
    if metrics.get("variants") is None:
        return  # no gold links
    head = balanced if a.ranking == "balanced" else metrics["variants"][f"l2r/{a.ranking}/all"]
    metrics.update({k: head[k] for k in ("hits@1", "hits@10", "mrr")},
                   headline="balanced" if a.ranking == "balanced" else f"l2r/{a.ranking}/all")


def matches_table(m: MatchResult) -> pa.Table:
    """matches.parquet: one row per matched pair, best first (``score``: the balanced mass of
    the assignment, or the CSLS score for ``greedy``; ``similarity``: the aligner's cosine)."""
    return pa.table({"left_id": pa.array(m.left, pa.int64()),
                     "right_id": pa.array(m.right, pa.int64()),
                     "score": pa.array(m.share.astype(np.float32)),
                     "similarity": pa.array(m.similarity.astype(np.float32))})


def matching_summary(m: MatchResult, a, gold, balanced: dict | None) -> dict[str, Any]:
    """metrics.json's ``matching``: how the assignment was solved and, when gold links exist,
    its precision / recall / F1 and ``balanced``, the Hits@k of the balanced scores
    (evaluation only)."""
    out: dict[str, Any] = {"method": m.method, "matches": int(m.left.size),
                           "candidates": m.candidates, "dropped_as_dangling": m.dropped,
                           "candidates_per_entity": a.match_k}
    if m.method == "sinkhorn":
        out.update(temperature=a.match_temperature, iterations=a.match_iterations,
                   min_share=a.match_min_share)
    if gold is not None:
        out.update(match_metrics(m, gold[0], gold[1]))
        out["ranking"] = balanced
    return out


def aligned_samples(matches: MatchResult | None, top1, pair, a) -> dict[str, Any]:
    """report.json ``align.samples`` (:func:`psqe_ray.report.samples.sample_pairs`): from the
    one-to-one matches, or from every left entity's top-1 (ids, scores, cosines) when matching
    is off."""
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
    ids, scores, sim = (np.asarray(x) for x in top1)
    ok = np.flatnonzero(ids >= 0)
    return sample_pairs(ok, ids[ok], scores[ok], similarity=sim[ok], source="top-1",
                        score_name={"balanced": "balanced mass", "csls": "CSLS"}.get(
                            a.ranking, "cosine"), **names)


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
              engine: Engine | None = None) -> dict[str, Any]:
    """Train ``cfg.align.recipe`` on the seeds at ``seeds_url``; write ``out_url``/
    alignment.parquet, matches.parquet and metrics.json atomically.  Returns the metrics (or
    the existing ones when ``out_url`` already holds this exact result).  ``engine``: where
    the work runs (default: this process)."""
    engine = engine or Engine()
    with engine.session():
        return _run_align(dataset_url, seeds_url, out_url, cfg, storage_options, engine)


def _run_align(dataset_url: str, seeds_url: str, out_url: str, cfg: PSQEConfig,
               storage_options: StorageOptions, engine: Engine) -> dict[str, Any]:
    engine.start_step()
    t0 = time.perf_counter()
    cfg.check()
    ds = Dataset(dataset_url, storage_options=storage_options)
    counts = ds.entity_counts()
    seed_l, seed_r = read_seeds(seeds_url, counts, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": align_settings(cfg),
                      "seeds": fingerprint([seed_l.tolist(), seed_r.tolist()]),
                      "code": __version__, **engine.identity()})
    with StepOutput(out_url, stage=f"align-{cfg.align.recipe}", fingerprint=fp,
                    result="metrics.json", what="this alignment",
                    storage_options=storage_options, keep=(TRAIN,), entity_counts=counts,
                    inputs={"dataset": ds.manifest["fingerprint"]}) as out:
        if out.reused is not None:
            return out.reused
        steps = engine.align_steps(cfg, out_url, storage_options)
        profile: list[dict] = []  # report: seconds and peak memory per step
        try:
            with StepMeter() as meter:
                pair, gen, mods = steps.inputs(ds)
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
            aligner = steps.fit(gen, mods, graph, pair.left.n, seed_l, seed_r, checkpoint)
        worker = getattr(aligner, "report_extras_", {}).get("worker_peak_rss_bytes")  # Ray
        profile.append({"step": "train", **meter.record(),
                        **({"worker_peak_rss_bytes": int(worker)} if worker else {})})
        left, right = aligner.embeddings_
        a = cfg.align
        t = time.perf_counter()
        with StepMeter() as meter:
            if a.matching == "off" and a.ranking == "plain":
                lr, rl = steps.topk(gen, left, right, a.topk), None
            elif a.topk <= a.match_k:  # both ways, one pass over the score tiles where it can
                lr, rl = steps.topk_both(gen, left, right, a.match_k)
            else:
                lr, rl = steps.topk(gen, left, right, a.topk), steps.topk(gen, right, left,
                                                                           a.match_k)
            if a.ranking != "balanced":
                best = ranked(lr, rl, a)
        search_seconds = time.perf_counter() - t
        profile.append({"step": "search", **meter.record(), **task_peak()})
        matches = graph_ = share = None
        t = time.perf_counter()
        if a.matching != "off" or a.ranking == "balanced":
            with StepMeter() as meter:
                graph_, matches = assign(lr, rl, a)
                share = balanced_share(graph_, matches, a)
                if a.ranking == "balanced":
                    best = ranked(lr, rl, a, graph_, share)
            profile.append({"step": "matching", **meter.record(), **task_peak()})
            if a.matching == "off":
                matches = None  # balanced for the ranking only: no matches.parquet
            else:
                log.info("align %s: %d one-to-one matches (%s on %d candidate pairs; %d left "
                         "out as dangling)", a.recipe, len(matches.left), a.matching,
                         matches.candidates, matches.dropped)
        del lr, rl
        table = topk_table(*best)
        top1 = None if matches is not None else (best[1][:, 0], best[0][:, 0], best[2][:, 0])
        del best
        match_seconds = time.perf_counter() - t
        metrics: dict[str, Any] = {"hits@1": None, "hits@10": None, "mrr": None}
        t = time.perf_counter()
        balanced = None  # the Hits@k of the balanced scores
        with StepMeter() as meter:
            if pair.gold is not None:  # evaluation only: after training, nothing chosen on it
                metrics = steps.metrics(gen, left, right, pair.gold)
                if graph_ is not None:
                    balanced = rerank_metrics(graph_, share, pair.gold[0], pair.gold[1])
                set_headline(metrics, a, balanced)
        eval_seconds = time.perf_counter() - t
        profile.append({"step": "evaluation", **meter.record(), **task_peak()})
        metrics["samples"] = aligned_samples(matches, top1, pair, a)
        if matches is not None:
            metrics["matching"] = matching_summary(matches, a, pair.gold, balanced)
            metrics["matching"]["seconds"] = round(match_seconds, 3)
        del graph_, share
        metrics.update({
            "recipe": cfg.align.recipe,
            "dataset": dataset_url, "seeds": seeds_url,
            "seeds_used": int(len(seed_l)),
            "pairs_added": [int(x) for x in aligner.added_],
            "match_round_pairs": [int(x) for x in aligner.matched_],
            "train_steps": int(aligner.steps_),
            "modalities": list(aligner.modality_weights_),
            "modality_weights": aligner.modality_weights_,
            "feature_sources": getattr(gen, "feature_sources_", {}),
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
            "driver_peak_rss_bytes": high_water_bytes(),
            "profile": profile,
            "align_config": to_dict(cfg.align),
            "reproducibility": reproducibility(cfg),
            "fingerprint": fp, "code_version": __version__,
            **getattr(aligner, "report_extras_", {}),
        })
        nodes = steps.nodes(gen)
        if nodes is not None:  # the Ray engine: every task and actor of this step, per node
            metrics["nodes"] = nodes
        tables = [("alignment", table, "alignment.parquet")]
        if matches is not None:
            tables.append(("matches", matches_table(matches), "matches.parquet"))
        out.commit(metrics, tables=tables, meta={"dataset": dataset_url, "seeds": seeds_url,
                                                 "recipe": cfg.align.recipe})
        checkpoint.clear()
    log.info("align %s: hits@1 %s, hits@10 %s, mrr %s, %.1f s", cfg.align.recipe,
             metrics["hits@1"], metrics["hits@10"], metrics["mrr"], metrics["seconds_total"])
    return metrics
