"""Connecting to Ray (the cluster of ``ray job submit`` / ``RAY_ADDRESS``, or an embedded local
one), sizing actors and training workers, waiting on tasks."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

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
        _explicit_token_auth()
    ray.init(address=address, **kwargs)
    try:
        # the encoder pool's progress is psqe-ray's own (rows done, rows/s on the driver:
        # core/progress.py); Ray Data's bars (or, off a terminal, its multi-line status blocks)
        # would repeat it and draw over its bar
        ray.data.DataContext.get_current().enable_progress_bars = False
        _drop_log_line("ray.data._internal.progress", "Progress bars disabled.")
        yield
    finally:
        ray.shutdown()


class _DropLine(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _drop_log_line(logger: str, prefix: str) -> None:
    """Silence one known, harmless line of another library's logger (once per process).
    Used for Ray Data's WARNING "Progress bars disabled. To enable, set ..." only: it repeats
    the setting :func:`ray_session` chose on purpose (psqe-ray draws the encoder pool's
    progress itself), and Ray Data logs it whenever its bars are off."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, _DropLine) and f.prefix == prefix for f in target.filters):
        target.addFilter(_DropLine(prefix))


def _explicit_token_auth() -> None:
    """Token authentication for the embedded Ray, chosen explicitly.  It is Ray's default for
    a new local cluster, but with ``RAY_AUTH_MODE`` unset Ray enables it itself and logs a
    WARNING on every start ("Token authentication is enabled for this Ray cluster. Set
    RAY_AUTH_MODE=disabled to opt out").  Ray reads the mode into its config when imported, so
    the config is reloaded after the variable is set, the two steps Ray itself takes when it
    enables the default (``authentication_token_setup._enable_token_auth``): the driver and the
    processes it starts must agree on the mode.  A mode set by the user is kept; a Ray without
    that config hook decides on its own."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    try:
        from ray._raylet import Config
    except ImportError:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


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


def cluster_cpus() -> int:
    """The cluster's CPUs (at least 1): the default number of search shards and partitions."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_cpus() -> list[float]:
    """CPUs of every alive node that has CPUs ([1] when none is listed)."""
    return [n["Resources"]["CPU"] for n in ray.nodes()
            if n["Alive"] and n["Resources"].get("CPU", 0) > 0] or [1]


def get_all(refs: list, progress=None) -> list:
    """``ray.get(refs)`` (the results in the order of ``refs``), each fetched as soon as its
    task ends (``ray.wait``), so ``progress`` (a :class:`psqe_ray.core.progress.Progress`)
    counts the tasks done and a failed task raises without waiting for the others.  Retries
    (``max_retries``) and lineage reconstruction are Ray's, as with one ``ray.get``."""
    slot = {ref: i for i, ref in enumerate(refs)}
    out: list = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                out[slot[ref]] = ray.get(ref)
            if progress is not None:
                progress.add(len(ready))
    finally:
        if progress is not None:
            progress.close()
    return out
