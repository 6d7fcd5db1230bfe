"""The Ray engine: the runners' steps on a Ray cluster (:mod:`psqe_ray.runners.engine` has the
shape and the in-process engine).

The seeds come from :class:`~psqe_ray.distributed.psqe.RaySeedGenerator` (its heavy steps as
Ray tasks, Ray Data pools and Ray Train; each stage committed under ``OUT_URL/stages/``), the
aligner from :class:`~psqe_ray.distributed.align.RayAlignSteps` (Ray Train, shard tasks).  The
cluster is the one of ``ray job submit`` / ``RAY_ADDRESS`` / ``address``, or an embedded local
Ray started for the runner's session.  Every step tallies the work of its tasks and actors per
node (``nodes`` in its report).
"""

from __future__ import annotations

from typing import Any, ContextManager

from psqe_ray.config import PSQEConfig
from psqe_ray.distributed.align import RayAlignSteps
from psqe_ray.distributed.psqe import RaySeedGenerator
from psqe_ray.distributed.runtime import ray_session
from psqe_ray.distributed.usage import merge_nodes, Meter
from psqe_ray.io.fs import StorageOptions
from psqe_ray.runners.engine import Engine


class RayEngine(Engine):
    """Args: ``address`` of the cluster (else ``RAY_ADDRESS``, else an embedded Ray with
    ``num_cpus``, default ``PSQE_RAY_NUM_CPUS`` or every core)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address, self.num_cpus = address, num_cpus
        self.driver: Meter | None = None

    def session(self) -> ContextManager[None]:
        return ray_session(self.address, self.num_cpus)

    def start_step(self) -> None:
        """The driver's usage meter of this step starts: the dataset it loads counts too."""
        self.driver = Meter("driver")

    def seed_inputs(self, cfg: PSQEConfig, out_url: str, dataset_fingerprint: str, ds,
                    storage_options: StorageOptions = None):
        gen = RaySeedGenerator(cfg, out_url, dataset_fingerprint,
                               storage_options=storage_options, driver=self.driver)
        return gen, gen.load(ds)  # the graph only: the tasks read the feature tables

    def align_steps(self, cfg: PSQEConfig, out_url: str,
                    storage_options: StorageOptions = None) -> RayAlignSteps:
        return RayAlignSteps(cfg, out_url, storage_options, driver=self.driver)

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name}

    def report_extras(self, report: dict[str, Any]) -> dict[str, Any]:
        """``nodes``: the per-node records of every step (encoders, seeds, aligner) summed."""
        return {"nodes": merge_nodes(*[e.get("nodes") for e in report.get("encode", [])],
                                     report["seeds"].get("nodes"),
                                     report["align"].get("nodes"))}
