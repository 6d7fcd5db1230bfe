"""PSQE on Ray: the in-process algorithm with its heavy steps spread over a cluster.

:class:`RaySeedGenerator` is the in-process :class:`~psqe_ray.core.psqe.SeedGenerator` with
its step hooks run on Ray (same ``core`` functions, same inputs, hence the same seeds):

* fusion: Ray Data ``map_batches`` over entity ids on an actor pool (each actor maps the
  prepared modality matrices from the object store);
* Stage I: one Ray task per K-means cluster (K grows with N: clusters stay bounded);
* Stage II: Ray Train ``TorchTrainer`` (sampled neighbourhoods, gradients all-reduced across
  ``distributed.train_workers``; checkpoints under ``OUT_URL/stages/_train``; the worker loop is
  :func:`psqe_ray.distributed.workers.seed_encoder_worker`), then rank 0 embeds every entity;
* global top-k: the base side cut into ``distributed.shards`` FAISS shards, one task each
  (exact flat search by default, IVF as an option), merged with the associative
  :func:`~psqe_ray.core.topk.merge_topk`;
* MIC and Stage III: map tasks over the seed table partitioned by left entity id
  (:class:`psqe_ray.distributed.partitions.PartitionedSeeds`), reduced on the driver.

Every stage commits its output under ``OUT_URL/stages/<stage>/`` with a manifest
(:class:`psqe_ray.distributed.stages.StageStore`); a rerun of the same job (same dataset,
configuration and code) loads committed stages instead of recomputing them, and continues an
interrupted training from its latest checkpoint.

Every task and actor returns its usage record (:class:`~psqe_ray.distributed.usage.Meter`)
with its result; the report's ``nodes`` tallies them per node (work this run did: a stage
loaded from its commit adds nothing).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from typing import Iterable

import numpy as np
import ray

from psqe_ray import __version__
from psqe_ray.config import PSQEConfig, fingerprint, seed_settings, to_dict
from psqe_ray.core.blocks import (SIDES, kmeans_init, row_ranges, seed_centroids,
                                  update_centroids)
from psqe_ray.core.progress import Progress
from psqe_ray.core.psqe import TOPK_LABELS, SeedGenerator
from psqe_ray.core.topk import empty_topk, merge_topk
from psqe_ray.distributed.blocks import (Joined, Sharded, best_task, fuse_task, kmeans_task,
                                         prepare_task, raw_task, split_task, take_task)
from psqe_ray.distributed.partitions import PartitionedSeeds
from psqe_ray.distributed.raytrain import fit_on_ray, train_threads
from psqe_ray.distributed.runtime import cluster_cpus, cluster_device, get_all, node_cpus
from psqe_ray.distributed.stages import STAGES, StageStore
from psqe_ray.distributed.tasks import cluster_task, greedy_task, topk_shard
from psqe_ray.distributed.usage import Meter, node_usage
from psqe_ray.distributed.workers import seed_encoder_worker
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions, absolute, join, resolve
from psqe_ray.io.load import load_pair
from psqe_ray.schemas import is_feature_table, modality_of

log = logging.getLogger(__name__)

# execution knobs that never change the seeds: not part of a stage's identity
_NEUTRAL = ("shards", "partitions", "block_rows", "checkpoint_every", "train_cpus",
            "max_failures")


class RaySeedGenerator(StageStore, PartitionedSeeds, SeedGenerator):
    """:class:`SeedGenerator` with its steps on Ray and a committed output per stage.

    Args:
        config: the run's configuration (its ``distributed`` section sizes the work).
        out_url: the run's output folder; stages go to ``out_url/stages/<name>/``.
        dataset_fingerprint: identifies the input (with the configuration and code version it
            names each stage, so a rerun reuses committed stages only when nothing changed).
        driver: the driver's :class:`Meter`, started before the dataset was loaded (default:
            one started now).
    """

    def __init__(self, config: PSQEConfig, out_url: str, dataset_fingerprint: str, *,
                 storage_options: StorageOptions = None, driver: Meter | None = None) -> None:
        super().__init__(config)
        self.out_url = absolute(out_url)  # workers may run elsewhere than the driver's cwd
        self.storage_options = storage_options
        cfg = seed_settings(config)
        cfg["distributed"] = {k: v for k, v in cfg["distributed"].items() if k not in _NEUTRAL}
        self.run_id = fingerprint({"dataset": dataset_fingerprint, "config": cfg,
                                   "code": __version__})
        self.resources_: dict[str, dict] = {}
        self.resumed_: list[str] = []
        self.usage_: list[dict] = []  # Meter records of every task and actor run so far
        self._nodes: dict[str, set] = {}  # stage -> nodes its tasks ran on
        self._current = "features"
        self.driver_ = driver or Meter("driver")

    def report_extras(self) -> dict:
        return {**super().report_extras(), "resources": self.resources_,
                "resumed_stages": self.resumed_,
                "stages_url": join(self.out_url, STAGES),
                "nodes": node_usage(self.usage_, self.driver_.take())}

    def _res(self, stage: str, **entries) -> dict:
        """The resources record of ``stage`` (``gpus``: GPUs its workers held, 0 unless set)."""
        res = self.resources_.setdefault(stage, {"gpus": 0})
        res.update(entries)
        return res

    def _account(self, records: Iterable[dict]) -> None:
        """Keep the current stage's usage records; its resources say on how many nodes it ran."""
        records = list(records)
        self.usage_ += records
        nodes = self._nodes.setdefault(self._current, set())
        nodes.update(r["node"] for r in records)
        self._res(self._current, nodes=len(nodes))

    # -- the partitioned vectors (psqe_ray.distributed.blocks) -----------------------------------
    def load(self, ds: Dataset):
        """The pair without its feature tables (tasks read those block by block)."""
        self._dataset_url = absolute(ds.url)
        self._tables = {modality_of(t): int(ds.manifest["tables"][t]["dim"])
                        for t in ds.tables if is_feature_table(t)}
        return load_pair(ds, features=False)

    def _ranges(self, n: int) -> list[tuple[int, int]]:
        d = self.config.distributed
        return row_ranges(n, d.block_rows, d.chunk_rows)

    def _get_usage(self, refs: list) -> None:
        """Wait for the tasks whose usage records ``refs`` are; account for them."""
        self._account(ray.get(refs))

    def prepare(self, pair):
        """:meth:`SeedGenerator.prepare` block by block on Ray: raw rows (one task per block,
        precomputed tables read there), the driver reduces their small statistics, then one
        task per block centres, fills and normalises.  Returns modality -> (left, right)
        :class:`Sharded`."""
        self._current = "features"
        self.skipped_ = {}
        cfg, d = self.config, self.config.distributed
        sources = self.plan(pair, getattr(self, "_tables", {}))
        names = list(sources)
        sums = {m: self.needs_stats(m, sources[m]) for m in names}
        src_ref = ray.put(sources)
        bounds = {s: self._ranges(pair.side(s).n) for s in SIDES}
        raw, stat_refs = {}, []
        for s in SIDES:
            side_names = pair.side(s).names
            for i, (a, b) in enumerate(bounds[s]):
                refs = raw_task.options(num_returns=len(names) + 1).remote(
                    src_ref, s, a, b, cfg.features, side_names[a:b] if side_names is not None
                    else None, self._dataset_url, self.storage_options, sums, d.chunk_rows)
                raw[s, i] = refs[:-1]
                stat_refs.append((s, refs[-1]))
        stats = {m: {s: [] for s in SIDES} for m in names}
        got = ray.get([r for _, r in stat_refs])
        self._account(g[1] for g in got)
        for (s, _), (st, _) in zip(stat_refs, got):
            for m in names:
                stats[m][s].append(st[m])
        a, b = bounds["left"][0]
        self._res("features", blocks=len(stat_refs), block_rows=b - a)
        preps = self.check(sources, stats)
        used = [m for m in names if m in preps]
        blocks = {m: {s: [] for s in SIDES} for m in used}
        usage = []
        for s in SIDES:
            for i, (a, b) in enumerate(bounds[s]):
                refs = prepare_task.options(num_returns=len(used) + 1).remote(
                    used, s, a, {m: preps[m] for m in used}, cfg.seed, d.chunk_rows,
                    *[raw[s, i][names.index(m)] for m in used])
                for m, r in zip(used, refs[:-1]):
                    blocks[m][s].append(r)
                usage.append(refs[-1])
        self._get_usage(usage)
        del raw
        mods = {m: tuple(Sharded(blocks[m][s], bounds[s], sources[m].dim) for s in SIDES)
                for m in used}
        # the signal test's sample (2,000 rows per modality) comes to the driver; its exact
        # searches are one task per right block, merged (the in-process answer, bit for bit)
        mods = self.screen(mods, lambda x, ids: self._rows(x, ids, "signal-sample"),
                           self._best)
        return mods, self._weights(mods)

    def _fuse(self, mods, weights):
        names = sorted(m for m in mods if weights.get(m, 0.0) > 0)
        if not names:
            raise ValueError("no modality with a positive weight to fuse")
        dim = sum(mods[m][0].dim for m in names)
        out, usage = [], []
        for side in (0, 1):
            refs = []
            for i, (a, b) in enumerate(mods[names[0]][side].bounds):
                ref, u = fuse_task.options(num_returns=2).remote(
                    names, weights, self.config.distributed.chunk_rows,
                    *[mods[m][side].refs[i] for m in names])
                refs.append(ref)
                usage.append(u)
            out.append(Sharded(refs, mods[names[0]][side].bounds, dim))
        self._get_usage(usage)
        return out[0], out[1]

    def _best(self, query: np.ndarray, base: Sharded, k: int):
        """Exact top-``k`` of a few query rows of this process among a sharded base: one task
        per block, merged with the associative merge."""
        q = ray.put(np.ascontiguousarray(query, np.float32))
        got = ray.get([best_task.remote(ref, a, q, k) for ref, (a, _) in
                       zip(base.refs, base.bounds)])
        self._account(g[1] for g in got)
        merged = empty_topk(len(query), min(k, len(base)))
        for res, _ in got:
            merged = merge_topk(merged, res, merged[0].shape[1])
        return merged

    def _rows(self, x: Sharded, ids: np.ndarray, kind: str = "take-rows") -> np.ndarray:
        """Rows ``ids`` of a sharded matrix, gathered by one task per block that holds any."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), x.dim), np.float32)
        jobs = []
        for ref, (a, b) in zip(x.refs, x.bounds):
            m = np.flatnonzero((ids >= a) & (ids < b))
            if len(m):
                jobs.append((m, take_task.remote(ref, ids[m] - a, kind)))
        got = ray.get([j[1] for j in jobs])
        for (m, _), (rows, _) in zip(jobs, got):
            out[m] = rows
        self._account(g[1] for g in got)
        return out

    def _cluster(self, fused_l, fused_r, k):
        """Spherical K-means block by block (:func:`psqe_ray.core.blocks.kmeans`, the same
        labels): the driver holds the k centroids and the labels only."""
        st1, seed = self.config.stage1, self.config.seed
        nl, n = len(fused_l), len(fused_l) + len(fused_r)
        if k <= 1 or n <= k:
            labels = np.zeros(n, np.int64) if k <= 1 else np.arange(n, dtype=np.int64)
            return labels[:nl], labels[nl:]
        rows = kmeans_init(n, k, seed)
        cand = np.concatenate([self._rows(fused_l, rows[rows < nl]),
                               self._rows(fused_r, rows[rows >= nl] - nl)])
        centroids = seed_centroids(cand, k, seed)
        blocks = list(fused_l.refs) + list(fused_r.refs)
        for _ in range(st1.kmeans_iters):
            cref = ray.put(centroids)
            res = ray.get([kmeans_task.remote(b, cref, k, False, self.config.distributed.chunk_rows)
                           for b in blocks])
            self._account(r[1] for r in res)
            centroids = update_centroids(sum(r[0] for r in res), centroids)
        cref = ray.put(centroids)
        res = ray.get([kmeans_task.remote(b, cref, k, True, self.config.distributed.chunk_rows)
                       for b in blocks])
        self._account(r[1] for r in res)
        labels = np.concatenate([r[0] for r in res])
        self._res(self._current, kmeans_tasks=len(blocks) * (st1.kmeans_iters + 1))
        return labels[:nl], labels[nl:]

    def _joined(self, fused, learned):
        # made row by row where a map task reads them: no third copy of every vector
        return Joined(fused, learned)

    def _greedy(self, xl, xr, budget):
        l, r, s, usage = ray.get(greedy_task.remote(xl, xr, budget, self.searcher))
        self._account([usage])
        return l, r, s

    def fit(self, pair):
        self._counts = {"left": pair.left.n, "right": pair.right.n}
        if not hasattr(self, "_dataset_url"):
            raise ValueError("RaySeedGenerator.fit needs the pair from its load(dataset)")
        return super().fit(pair)

    # -- the hooks, on Ray ------------------------------------------------------------------------
    def _sample_clusters(self, sim_l, sim_r, lab_l, lab_r, budgets):
        """Stage I: each block cut by cluster (one task per block, ``K`` returns), then one
        task per cluster that fetches only its own rows."""
        k = self.config.stage1.candidates
        n_clusters = len(budgets)
        pieces, usage = {}, []
        for side, sim, lab in (("left", sim_l, lab_l), ("right", sim_r, lab_r)):
            pieces[side] = []
            for ref, (a, b) in zip(sim.refs, sim.bounds):
                out = split_task.options(num_returns=n_clusters + 1).remote(
                    ref, lab[a:b], a, n_clusters)
                pieces[side].append(out[:-1])
                usage.append(out[-1])
        futures = [cluster_task.remote([p[c] for p in pieces["left"]],
                                       [p[c] for p in pieces["right"]], int(budgets[c]), k,
                                       self.searcher)
                   for c in range(n_clusters)]
        results = ray.get(futures)
        self._get_usage(usage)
        self._res(self._current, tasks=len(futures),
                  worker_peak_rss_bytes=max((r[3] for r in results), default=0))
        self._account(r[4] for r in results)
        return [(*r[:3], r[5]) for r in results]  # r[5]: the rejected candidates' score counts

    def _learn(self, pair, mods, weights, seed_l, seed_r):
        from psqe_ray.core.train import joint_graph

        cfg, d = self.config, self.config.distributed
        graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
        refs = [ray.put(graph), ray.put((seed_l, seed_r))]
        storage_url = join(self.out_url, STAGES, "_train")
        run_name = f"stage2-{self.run_id}"
        resume = self._latest_checkpoint(join(storage_url, run_name))
        if resume:
            log.info("stage2: continuing from checkpoint %s", resume)
        threads = cfg.threads or train_threads(d.train_workers)
        device = cluster_device(d.device)
        w = self._open_writer
        bounds = {s: mods[next(iter(mods))][i].bounds for i, s in enumerate(SIDES)}
        state = fit_on_ray(
            seed_encoder_worker,
            {"refs": refs, "mods": {m: (v[0].refs, v[1].refs) for m, v in mods.items()},
             "weights": weights, "bounds": bounds,
             "stage_url": self._stage_url(self._current),
             "learned_prefix": f"blocks/learned-{w.token}",
             "stage2": to_dict(cfg.stage2), "seed": cfg.seed,
             "n_left": pair.left.n, "anchor": self.anchor_, "threads": threads,
             "checkpoint_every": d.checkpoint_every, "resume": resume,
             "storage_options": self.storage_options},
            workers=d.train_workers, cpus=d.train_cpus, name=run_name, storage_url=storage_url,
            storage_options=self.storage_options, keep=2, result_file="state.pkl", device=device,
            max_failures=d.max_failures, progress="stage2 training")
        self.losses_ = state["losses"]
        learned = state["learned"]
        self._res(self._current, workers=d.train_workers, cpus_per_worker=d.train_cpus,
                  device=device, gpus=d.train_workers if device == "cuda" else 0,
                  threads=threads, checkpoints=join(storage_url, run_name),
                  worker_peak_rss_bytes=int(state.get("rss", 0)))
        self._account(state["usage"])
        out = self._read_blocks(learned, self._stage_url(self._current))
        for s, x in zip(SIDES, out):
            x.written = [rel for _, _, rel in learned[s]]
        return out

    def _latest_checkpoint(self, run_url: str) -> str | None:
        """URL of the newest ``state.pkl`` under a Ray Train run folder (None when none)."""
        fs, path = resolve(run_url, self.storage_options)
        try:
            found = set(fs.find(path))
        except FileNotFoundError:
            return None
        best, best_epoch = None, -1
        for p in found:
            state = p[:-len("epoch.json")] + "state.pkl"
            if not p.endswith("/epoch.json") or state not in found:
                continue  # a checkpoint cut short by the kill: ignore it
            try:
                epoch = json.loads(fs.cat_file(p))["epoch"]
            except (ValueError, KeyError, OSError):
                continue
            if epoch > best_epoch:
                best, best_epoch = state, epoch
        if best is None:
            return None
        rel = best[len(path.rstrip("/")) + 1:]
        return join(run_url, rel)

    def _search(self, query: Sharded, base: Sharded, k: int, label: str | None = None):
        """Top-k (scores, ids) of every query row among the base rows: the search layer's plan
        for the base's size, one shard task each (fetching only its base blocks, the queries
        block by block), merged with the associative top-k merge.  The shards done show on
        the driver as ``label`` (default: the stage's name and "search")."""
        d = self.config.distributed
        # exact search: one shard per CPU (any split gives the same answer); IVF: the
        # searcher's size-based plan, whatever the cluster, so results never depend on it
        shards = d.shards or cluster_cpus()
        # IVF shards go to GPUs when the cluster has them (one per actor); exact shards and
        # the canonical rescoring are CPU work
        device = cluster_device(d.device)
        searcher = copy.copy(self.searcher)
        searcher.device = device
        kk = min(k, len(base))
        plan = self.searcher.plan(len(base), shards)
        opts, threads = {}, 1
        if plan.kind == "ivf":
            # few large shards: each task gets a share of the CPUs (at most a node's) and
            # runs that many FAISS threads; exact shards are one single-threaded task per CPU
            # (more shards than CPUs: fractional CPUs, one thread each, so all fit at once)
            per = cluster_cpus() / len(plan.bounds)
            threads = int(max(1, min(min(node_cpus()), per)))
            opts = {"num_cpus": threads if per >= 1 else math.floor(per * 100) / 100,
                    **({"num_gpus": 1} if device == "cuda" else {})}
        # tasks: a shard lost with its node is run again by Ray (max_retries), its blocks
        # rebuilt from their lineage
        queries = list(query.refs)
        results = get_all([topk_shard.options(**opts, max_retries=d.max_failures).remote(
            base.overlapping(a, b), searcher, plan, i, threads, queries, kk)
            for i, (a, b) in enumerate(plan.bounds)],
            Progress(label or f"{self._current} search", len(plan.bounds), "shards"))
        merged = empty_topk(len(query), kk)
        for (res, _, _) in results:
            merged = merge_topk(merged, res, kk)
        res = self._res(self._current)
        res.setdefault("search", []).append(plan.describe())
        res["shards"] = len(plan.bounds)
        res["gpus"] = len(plan.bounds) if device == "cuda" and plan.kind == "ivf" else 0
        res["worker_peak_rss_bytes"] = max([res.get("worker_peak_rss_bytes", 0)]
                                           + [r[1] for r in results])
        self._account(r[2] for r in results)
        return merged

    def _global_topk(self, learned_l, learned_r, k):
        return (self._search(learned_l, learned_r, k, TOPK_LABELS[0]),
                self._search(learned_r, learned_l, k, TOPK_LABELS[1]))
