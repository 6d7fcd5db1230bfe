"""The per-node accounting of the Ray path: what every task, actor and training worker read
(objects, storage) and on which node (:class:`Meter`), tallied per node for the reports'
``nodes``."""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from typing import Any, Iterable

import numpy as np
import ray

log = logging.getLogger(__name__)




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
