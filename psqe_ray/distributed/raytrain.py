"""Ray Train for psqe-ray's two training loops (Stage II, the aligner): the trainer run
(:func:`fit_on_ray`), gradient all-reduce across workers, the result handed back in the final
checkpoint, and the workers' epoch progress forwarded to the driver."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import ray

from psqe_ray.distributed.runtime import node_cpus

log = logging.getLogger(__name__)




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
