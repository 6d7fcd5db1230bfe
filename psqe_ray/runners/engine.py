"""Where a runner's work runs: one shape for both engines.

:class:`Engine` runs everything in this process; :class:`psqe_ray.distributed.engine.RayEngine`
(same methods) runs the heavy steps on a Ray cluster.  Every runner
(:func:`~psqe_ray.runners.seeds.run_seeds`, :func:`~psqe_ray.runners.align.run_align`,
:func:`~psqe_ray.runners.pipeline.run_pipeline`) takes an engine and asks it for:

* a ``session()`` around its work (Ray: the cluster, joined or started);
* ``start_step()`` first thing (Ray: the driver's usage meter starts);
* ``seed_inputs(...)``: the seed generator and the pair it reads (Ray: the generator whose
  hooks run on Ray and commit each stage; the pair without its feature tables);
* ``align_steps(...)``: the aligner's steps (:class:`AlignSteps`);
* ``identity()``: what the engine adds to an output's fingerprint;
* ``report_extras(report)``: keys for the pipeline's report (Ray: per-node usage).
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import numpy as np

from psqe_ray.align.trainer import Aligner
from psqe_ray.config import PSQEConfig
from psqe_ray.core.alignment_quality import Vectors, alignment_metrics
from psqe_ray.core.graph import KGPair
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.train import model_inputs, resolve_device, torch_threads
from psqe_ray.errors import ConfigError
from psqe_ray.io.checkpoint import AlignCheckpoint
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions
from psqe_ray.io.load import load_pair

ENGINES = ("local", "ray")


class AlignSteps:
    """The aligner's steps (:func:`~psqe_ray.runners.align.run_align`): where its inputs are
    made, where it trains and searches.  This one: in this process;
    :class:`psqe_ray.distributed.align.RayAlignSteps` on Ray (inputs as row blocks made by
    tasks, training on Ray Train, searches on shard tasks)."""

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
        """Every left entity's top-``k`` right entities (scores, ids): the search layer (its
        shards done show as "align search", as on Ray)."""
        return gen.searcher.topk(left, right, k, progress="align search")

    def topk_both(self, gen, left, right, k: int):
        """``(self.topk(gen, left, right, k), self.topk(gen, right, left, k))``, the same bits;
        here one pass over the score tiles when both sides are searched exactly
        (:meth:`~psqe_ray.core.search.Searcher.topk_both`)."""
        return gen.searcher.topk_both(left, right, k, progress="align search")

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


class Engine:
    """The in-process engine: every step in this process (the reference the Ray engine must
    match, and the fast path for tests)."""

    name = "in-process"

    def session(self) -> ContextManager[None]:
        return contextlib.nullcontext()

    def start_step(self) -> None:
        """Called by every runner first, inside :meth:`session`."""

    def seed_inputs(self, cfg: PSQEConfig, out_url: str, dataset_fingerprint: str,
                    ds: Dataset, storage_options: StorageOptions = None
                    ) -> tuple[SeedGenerator, KGPair]:
        """(the seed generator, the pair it fits on)."""
        return SeedGenerator(cfg), load_pair(ds)

    def align_steps(self, cfg: PSQEConfig, out_url: str,
                    storage_options: StorageOptions = None) -> AlignSteps:
        return AlignSteps(cfg)

    def identity(self) -> dict[str, Any]:
        """What this engine adds to an output's fingerprint (nothing: in-process outputs are
        named by their inputs, settings and code alone)."""
        return {}

    def report_extras(self, report: dict[str, Any]) -> dict[str, Any]:
        """Keys to add to the pipeline's report."""
        return {}


def engine_for(name: str, *, address: str | None = None, num_cpus: int | None = None) -> Engine:
    """The engine called ``name``: ``local`` (this process) or ``ray`` (the cluster of
    ``address`` / ``RAY_ADDRESS``, or an embedded local Ray with ``num_cpus``)."""
    if name == "local":
        return Engine()
    if name == "ray":
        from psqe_ray.distributed.engine import RayEngine

        return RayEngine(address=address, num_cpus=num_cpus)
    raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
