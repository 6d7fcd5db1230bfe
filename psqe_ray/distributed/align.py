"""The downstream aligner on Ray Train: :class:`psqe_ray.align.trainer.Aligner` in
``distributed.train_workers`` data-parallel workers (gradients all-reduced every step); the
Ray engine's :class:`RayAlignSteps`.

Rank 0 embeds every entity with the trained model and hands the joint vectors back through its
final Ray Train checkpoint (under ``OUT_URL/_train``, removed once the alignment is committed;
any fsspec URL works, so a multi-node cluster with ``s3://`` storage shares it), with every
worker's usage record: ``metrics.json`` and the pipeline's ``report.json`` tally them per node
(``nodes``).
"""

from __future__ import annotations

import logging

import numpy as np
import ray

from psqe_ray.align.trainer import Aligner
from psqe_ray.config import PSQEConfig, to_dict
from psqe_ray.core.alignment_quality import Vectors
from psqe_ray.distributed.blocks import pair_scores_task, subset
from psqe_ray.distributed.psqe import RaySeedGenerator
from psqe_ray.distributed.raytrain import fit_on_ray, train_threads
from psqe_ray.distributed.runtime import cluster_device
from psqe_ray.distributed.usage import Meter, node_usage
from psqe_ray.distributed.workers import ALIGNER_RESULT, aligner_worker
from psqe_ray.io.checkpoint import AlignCheckpoint
from psqe_ray.io.fs import StorageOptions, absolute, join, resolve
from psqe_ray.runners.align import TRAIN
from psqe_ray.runners.engine import AlignSteps

log = logging.getLogger(__name__)

class RayAlignSteps(AlignSteps):
    """:class:`psqe_ray.runners.engine.AlignSteps` on Ray: the inputs are made block by block
    by tasks (:meth:`psqe_ray.distributed.psqe.RaySeedGenerator.prepare`: the driver never
    holds the feature matrices), the training runs on Ray Train, whose workers fetch the
    blocks; ``driver``: the step's driver :class:`Meter`."""

    def __init__(self, cfg: PSQEConfig, out_url: str, storage_options: StorageOptions = None,
                 *, driver: Meter) -> None:
        super().__init__(cfg)
        self.out_url, self.storage_options = absolute(out_url), storage_options
        self.driver = driver

    def inputs(self, ds):
        gen = RaySeedGenerator(self.cfg, self.out_url, "align", driver=self.driver,
                               storage_options=self.storage_options)
        pair = gen.load(ds)
        mods, _ = gen.prepare(pair)
        return pair, gen, mods

    def fit(self, gen, mods, graph, n_left: int, seed_l: np.ndarray, seed_r: np.ndarray,
            checkpoint: AlignCheckpoint | None = None) -> Aligner:
        cfg, storage_options = self.cfg, self.storage_options
        d = cfg.distributed
        threads = cfg.threads or train_threads(d.train_workers)
        refs = [ray.put(graph), ray.put((seed_l, seed_r))]
        storage_url = join(self.out_url, TRAIN)
        blocks_url = join(storage_url, "blocks")
        first = next(iter(mods.values()))
        run_name = f"align-{cfg.align.recipe}"
        try:
            device = cluster_device(d.device)
            state = fit_on_ray(
                aligner_worker,
                {"refs": refs, "mods": {m: (v[0].refs, v[1].refs) for m, v in mods.items()},
                 "bounds": {"left": first[0].bounds, "right": first[1].bounds},
                 "blocks_url": blocks_url, "storage_options": storage_options,
                 "align": to_dict(cfg.align), "search": to_dict(cfg.search),
                 "seed": cfg.seed, "n_left": n_left, "threads": threads,
                 "checkpoint": None if checkpoint is None else
                 (checkpoint.url, checkpoint.tag, checkpoint.every)},
                workers=d.train_workers, cpus=d.train_cpus, name=run_name,
                storage_url=storage_url, storage_options=storage_options,
                result_file="result.pkl", device=device, max_failures=d.max_failures,
                progress=f"align {cfg.align.recipe} training")
            # into the object store before the training folder goes
            state["embeddings_"] = gen._read_blocks(state["embeddings_"], blocks_url)
        finally:  # the aligner's checkpoint stays until the alignment is committed
            for url in (join(storage_url, run_name), blocks_url):
                fs, path = resolve(url, storage_options)
                try:
                    fs.rm(path, recursive=True)
                except OSError as exc:  # gone already, or a real failure: say which
                    if fs.exists(path):
                        log.warning("could not remove %s: %r", url, exc)
        aligner = Aligner(cfg.align, cfg.seed)
        for k in ALIGNER_RESULT:
            setattr(aligner, k, state[k])
        aligner.report_extras_ = {"engine": "ray", "train_workers": d.train_workers,
                                  "device": device,
                                  "threads_per_worker": threads,
                                  "worker_peak_rss_bytes": int(state["rss"])}
        self.usage = state["usage"]
        return aligner

    def topk(self, gen, left, right, k: int):
        gen._current = "align"
        return gen._search(left, right, k)

    def topk_both(self, gen, left, right, k: int):
        """Two sharded searches (the shard tasks search one direction each)."""
        return self.topk(gen, left, right, k), self.topk(gen, right, left, k)

    def metrics(self, gen, left, right, gold) -> dict:
        if gen.searcher.is_exact(max(len(left), len(right))):
            # exact ranking counts over whole candidate sets: below the search layer's exact
            # threshold (at most search.exact_below rows per side) the driver holds them
            n = np.arange
            left, right = gen._rows(left, n(len(left))), gen._rows(right, n(len(right)))
        return super().metrics(gen, left, right, gold)

    def vectors(self, gen) -> Vectors:
        return BlockVectors(gen)

    def nodes(self, gen) -> dict:
        """Per-node records of everything the align step ran (features, training, search)."""
        return node_usage(gen.usage_ + self.usage, self.driver.take())


class BlockVectors(Vectors):
    """:class:`~psqe_ray.core.alignment_quality.Vectors` over row blocks: searches on shard tasks,
    the gold pairs' scores and the subsets made by tasks."""

    def __init__(self, gen: RaySeedGenerator) -> None:
        super().__init__(gen.searcher)
        self.gen = gen

    def topk(self, query, base, k: int):
        return self.gen._search(query, base, k)

    def pair_scores(self, x, x_ids, y, y_ids):
        """One task per ``block_rows`` pairs, each reading the two rows of its pairs."""
        rows = self.gen.config.distributed.block_rows
        got = ray.get([pair_scores_task.remote(x, x_ids[a:a + rows], y, y_ids[a:a + rows])
                       for a in range(0, len(x_ids), rows)])
        self.gen._account(g[1] for g in got)
        return np.concatenate([g[0] for g in got]) if got else np.zeros(0, np.float32)

    def subset(self, x, ids):
        out, usage = subset(x, ids, self.gen.config.distributed.block_rows)
        self.gen._get_usage(usage)
        return out
