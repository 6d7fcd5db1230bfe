"""Connecting to Ray (the cluster of ``ray job submit`` / ``RAY_ADDRESS``, or an embedded local
one), sizing actors and training workers, and the per-node accounting of the Ray path."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections import Counter
from typing import Any, Callable, Iterable, Iterator

import numpy as np
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


def gather_objects(obj) -> list:
    """Every Ray Train worker's ``obj``, in rank order (a collective: all ranks call it)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _train_storage(url: str, storage_options) -> tuple[Any, str]:
    """(pyarrow filesystem or None, path) for Ray Train's storage at any fsspec URL."""
    from psqe_ray.io.fs import is_local, resolve

    fs, path = resolve(url, storage_options)
    if is_local(fs):
        return None, os.path.abspath(path)
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


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


def send_progress(config: dict, done: int, total: int, loss: float) -> None:
    """From a training worker (rank 0): one epoch to the driver's progress line
    (:func:`fit_on_ray`); never fails the training."""
    queue = config.get("progress")
    if queue is not None:
        try:
            queue.put_nowait((done, total, loss))
        except Exception:  # noqa: BLE001  (full, or the driver's side is gone: only progress)
            pass


class _Forward:
    """The driver's side of the workers' progress: a queue actor on the driver's node and a
    thread that logs what arrives (:class:`psqe_ray.core.progress.EpochProgress`)."""

    def __init__(self, label: str) -> None:
        import threading

        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from psqe_ray.core.progress import EpochProgress

        node = ray.get_runtime_context().get_node_id()
        self.queue = Queue(maxsize=10000, actor_options={
            "num_cpus": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)})
        self.progress = EpochProgress(label)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="psqe-progress")
        self.thread.start()

    def _take(self, timeout: float) -> bool:
        from ray.util.queue import Empty

        try:
            msg = self.queue.get(timeout=timeout)
        except Empty:
            return False
        self.progress.update(*msg)
        return True

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self._take(0.5)
        except Exception:  # noqa: BLE001  (the queue actor is gone: progress only)
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        try:
            while self._take(0.05):  # what arrived after the thread's last look
                pass
            self.queue.shutdown()
        except Exception:  # noqa: BLE001
            pass


def fit_on_ray(loop: Callable[[dict], None], config: dict, *, workers: int, cpus: float,
               name: str, storage_url: str, storage_options=None, keep: int = 1,
               result_file: str, device: str = "cpu", max_failures: int = 0,
               progress: str | None = None) -> Any:
    """Run ``loop`` on Ray Train (``workers`` data-parallel workers of ``cpus`` CPUs each, and
    one GPU each when ``device`` is cuda; checkpoints under ``storage_url/name``, the newest
    ``keep``) and return the unpickled ``result_file`` of the final checkpoint (written by rank
    0).  The loop finds the device in ``config["device"]``.  When a worker is lost (its node
    or process), Ray Train restarts the group up to ``max_failures`` times; the loop resumes
    from ``ray.train.get_checkpoint()`` or its own checkpoint.  ``progress``: a label; the
    loop's :func:`send_progress` calls then show on the driver as progress lines."""
    import pickle

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from psqe_ray.io.fs import read_bytes, resolve

    pafs, storage_path = _train_storage(storage_url, storage_options)
    forward = _Forward(progress) if progress else None
    trainer = TorchTrainer(
        loop, train_loop_config={**config, "device": device,
                                 "progress": forward.queue if forward else None},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=device == "cuda",
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=pafs,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep),
                             failure_config=FailureConfig(max_failures=max_failures)))
    try:
        result = trainer.fit()
    finally:
        if forward is not None:
            forward.close()
    if getattr(result, "error", None) is not None:
        raise result.error
    with result.checkpoint.as_directory() as tmp:
        path = os.path.join(tmp, result_file)
        return pickle.loads(read_bytes(*resolve(path), path))  # counted as the driver's read


# ---- per-node accounting -----------------------------------------------------------------------
# Every task and actor of the Ray path (seed stages, Ray Train workers, encoder and fusion pools)
# keeps a Meter and returns its small record with its result; the driver tallies them per node
# (node_usage) into the reports' ``nodes``.  Definitions:
#   bytes_from_storage  bytes the task or actor read from storage through psqe_ray.io
#                       (read_bytes: seed partitions, checkpoints, images, model weights);
#   bytes_from_objects  in-memory size of the data it was handed: its array arguments (by value
#                       or from Ray's object store, local or fetched from another node), the
#                       objects it ray.get()s, the batches a pool actor maps; not configuration
#                       objects, not what it writes or returns;
#   bytes_read          their sum.
# Ray's own helpers (Ray Data's split tasks, the Ray Train controller) are not counted.
USAGE = "_usage"  # the column that carries a pool actor's record in its output batches


def payload_bytes(obj: Any) -> int:
    """In-memory bytes of the data in ``obj``: numpy arrays, Arrow tables and arrays, torch
    tensors, scipy CSR/CSC matrices and bytes, also inside tuples, lists and dict values;
    anything else (configurations, searchers, scalars, strings) counts 0."""
    if isinstance(obj, (tuple, list)):
        return sum(payload_bytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(payload_bytes(x) for x in obj.values())
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if hasattr(obj, "indptr") and hasattr(obj, "indices"):  # scipy compressed sparse
        return sum(payload_bytes(getattr(obj, a)) for a in ("data", "indices", "indptr"))
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # torch tensor
        return int(obj.element_size() * obj.nelement())
    n = getattr(obj, "nbytes", None)  # numpy, pyarrow
    return n if isinstance(n, int) else 0


class Meter:
    """What one Ray task or actor (or the driver) ran and read on its node.

    Create it first thing in the task (actor: in ``__init__``, with ``actor=True``), count the
    data it is handed with :meth:`add`, return :meth:`take`'s record with the result.  An actor
    returns one record per call, each with what was read since the previous one; the driver
    counts the actor once by its id.
    """

    def __init__(self, kind: str, *, actor: bool = False) -> None:
        from psqe_ray.io.fs import bytes_read

        ctx = ray.get_runtime_context()
        self.kind, self.node = kind, ctx.get_node_id()
        self.actor = ctx.get_actor_id() if actor else None
        self.objects, self._storage = 0, bytes_read()

    def add(self, *data: Any) -> "Meter":
        """Count ``data`` (arguments, fetched objects, batches) as read from objects."""
        self.objects += payload_bytes(data)
        return self

    def take(self) -> dict[str, Any]:
        """The record of what was read since the last ``take`` (or the start)."""
        from psqe_ray.io.fs import bytes_read

        now = bytes_read()
        record = {"kind": self.kind, "node": self.node, "address": ray.util.get_node_ip_address(),
                  "hostname": socket.gethostname(), "actor": self.actor,
                  "storage": now - self._storage, "objects": self.objects}
        self._storage, self.objects = now, 0
        return record


def with_usage(batch: dict[str, Any], record: dict) -> dict[str, Any]:
    """A pool actor's output ``batch`` with its record in column :data:`USAGE` (first row; the
    other rows empty), so it reaches the driver through Ray Data whatever the blocks become."""
    n = len(next(iter(batch.values())))
    col = np.full(n, "", dtype=object)
    if n:
        col[0] = json.dumps(record)
    return {**batch, USAGE: col}


def pop_usage(batch: dict[str, Any]) -> list[dict]:
    """Remove column :data:`USAGE` from a batch the driver got; the records it carried."""
    col = batch.pop(USAGE, None)
    return [] if col is None else [json.loads(x) for x in col if isinstance(x, str) and x]


def metered(udf: type, kind: str) -> type:
    """``udf`` (a Ray Data callable class of another package) with a :class:`Meter`: each
    output batch carries the record of its call (:func:`with_usage`; the driver takes it off
    with :func:`pop_usage`), the input batches count as read from objects."""

    class Metered(udf):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._meter = Meter(kind, actor=True)  # before the model loads: its reads count
            super().__init__(*args, **kwargs)

        def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
            self._meter.add(batch)
            return with_usage(super().__call__(batch), self._meter.take())

    Metered.__name__ = udf.__name__  # Ray Data names its operator after it
    return Metered


def gather_usage(record: dict) -> list[dict]:
    """Every Ray Train worker's record, on every rank (one all-gather over the workers'
    process group; just ``[record]`` without one).  All workers must call it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [record]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, record)
    return out


def node_usage(records: Iterable[dict], driver: dict | None = None) -> dict[str, dict]:
    """Per-node totals of :class:`Meter` records (the reports' ``nodes``): node id ->
    ``address``, ``hostname``, ``tasks`` and ``actors`` (kind -> count; an actor counts once
    however many records it sent), ``bytes_read``, ``bytes_from_storage``,
    ``bytes_from_objects``.  ``driver`` (the driver's record) adds ``driver_bytes_read`` (its
    storage reads, kept apart from the tasks' ``bytes_read``) to its node's entry."""
    nodes: dict[str, dict] = {}

    def entry(r: dict) -> dict:
        return nodes.setdefault(r["node"], {
            "address": r["address"], "hostname": r["hostname"], "tasks": Counter(),
            "actors": Counter(), "bytes_read": 0, "bytes_from_storage": 0,
            "bytes_from_objects": 0})

    actors = set()
    for r in records:
        e = entry(r)
        if r["actor"] is None:
            e["tasks"][r["kind"]] += 1
        elif r["actor"] not in actors:
            actors.add(r["actor"])
            e["actors"][r["kind"]] += 1
        e["bytes_from_storage"] += r["storage"]
        e["bytes_from_objects"] += r["objects"]
        e["bytes_read"] += r["storage"] + r["objects"]
    if driver is not None:
        entry(driver)["driver_bytes_read"] = driver["storage"]
    return {n: {**e, "tasks": dict(e["tasks"]), "actors": dict(e["actors"])}
            for n, e in nodes.items()}


def merge_nodes(*tallies: dict[str, dict] | None) -> dict[str, dict]:
    """Sum :func:`node_usage` results of separate steps (their tasks and actors are distinct)."""
    out: dict[str, dict] = {}
    for tally in tallies:
        for node, e in (tally or {}).items():
            m = out.setdefault(node, {"address": e["address"], "hostname": e["hostname"],
                                      "tasks": {}, "actors": {}})
            for key in ("tasks", "actors"):
                for kind, n in e[key].items():
                    m[key][kind] = m[key].get(kind, 0) + n
            for key in ("bytes_read", "bytes_from_storage", "bytes_from_objects",
                        "driver_bytes_read"):
                if key in e:
                    m[key] = m.get(key, 0) + e[key]
    return out
