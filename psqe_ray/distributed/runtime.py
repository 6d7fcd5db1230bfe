"""Connecting to Ray: the cluster of ``ray job submit`` (``RAY_ADDRESS``) or an embedded local one."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator

import ray

log = logging.getLogger(__name__)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray (a job's driver, a test's cluster) or start a local one for the block.

    ``address`` (else ``RAY_ADDRESS``) joins an existing cluster; without either, a local Ray
    is started with ``num_cpus`` (default: ``PSQE_RAY_NUM_CPUS``, else every core) and shut
    down at the end.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"include_dashboard": False, "logging_level": logging.WARNING,
              "log_to_driver": False}
    if address is None:
        num_cpus = num_cpus or int(os.environ.get("PSQE_RAY_NUM_CPUS", "0")) or None
        kwargs["num_cpus"] = num_cpus
        log.info("starting a local Ray (%s CPUs)", num_cpus or os.cpu_count())
    ray.init(address=address, **kwargs)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = True  # Ray Data's bars for the fusion and encoder pools
        yield
    finally:
        ray.shutdown()


def actor_plan(workers: int = 0, device: str = "auto") -> tuple[int, dict[str, float], int]:
    """(pool size, per-actor resources, torch threads per actor) for an encoder pool.

    One GPU per actor when the cluster has GPUs (and ``device`` allows); otherwise fractional
    CPUs: with whole CPUs the actors can take every core and starve the tasks that feed them
    (ENVIRONMENT.md: a 2-CPU machine deadlocks), so each actor asks for half a CPU and runs
    ``cores / actors`` torch threads.
    """
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    cpus = max(1, int(res.get("CPU", 1)))
    if gpus and device in ("auto", "cuda"):
        size = min(workers or gpus, gpus)
        return size, {"num_gpus": 1.0}, max(1, cpus // size)
    size = workers or max(1, cpus // 2)
    return size, {"num_cpus": 0.5}, max(1, cpus // size)


def cluster_device(device: str = "auto") -> str:
    """``distributed.device`` on Ray -> "cuda" or "cpu": ``auto`` is cuda when the cluster has
    GPUs; ``cuda`` on a cluster without GPUs is an error (asked for, not available)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "cuda" and not gpus:
        raise ValueError("distributed.device=cuda, but the Ray cluster has no GPU")
    return "cuda" if gpus and device in ("auto", "cuda") else "cpu"


def node_cpus() -> list[float]:
    """CPUs of every alive node that has CPUs ([1] when none is listed)."""
    return [n["Resources"]["CPU"] for n in ray.nodes()
            if n["Alive"] and n["Resources"].get("CPU", 0) > 0] or [1]


def train_threads(workers: int) -> int:
    """torch threads per Ray Train worker: the smallest node's CPUs shared by the workers that
    may land on it (more threads than cores made the all-reduce steps crawl)."""
    cpus = node_cpus()
    per_node = -(-workers // len(cpus))
    return max(1, int(min(cpus)) // per_node)


def allreduce_gradients(module, world: int) -> None:
    """Average every parameter's gradient over the ``world`` Ray Train workers (in place)."""
    if world == 1:
        return
    import torch
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def _train_storage(url: str, storage_options) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path) for Ray Train's storage at any fsspec URL."""
    from psqe_ray.io.fs import is_local, resolve

    fs, path = resolve(url, storage_options)
    if is_local(fs):
        return None, os.path.abspath(path)
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def fit_on_ray(loop: Callable[[dict], None], config: dict, *, workers: int, cpus: float,
               name: str, storage_url: str, storage_options=None, keep: int = 1,
               result_file: str, device: str = "cpu") -> Any:
    """Run ``loop`` on Ray Train (``workers`` data-parallel workers of ``cpus`` CPUs each, and
    one GPU each when ``device`` is cuda; checkpoints under ``storage_url/name``, the newest
    ``keep``) and return the unpickled ``result_file`` of the final checkpoint (written by rank
    0).  The loop finds the device in ``config["device"]``."""
    import pickle

    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    pafs, storage_path = _train_storage(storage_url, storage_options)
    trainer = TorchTrainer(
        loop, train_loop_config={**config, "device": device},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=device == "cuda",
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=pafs,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep)))
    result = trainer.fit()
    if getattr(result, "error", None) is not None:
        raise result.error
    with result.checkpoint.as_directory() as tmp:
        with open(os.path.join(tmp, result_file), "rb") as fh:
            return pickle.load(fh)
