"""Per-node accounting of the Ray path (runtime.Meter and its tallies): what a record counts, on
a real local Ray, and how records add up per node."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from psqe_ray.distributed.usage import (merge_nodes, Meter, node_usage, payload_bytes, pop_usage,
                                        with_usage)


def test_payload_bytes_counts_data_not_configuration():
    x = np.zeros((10, 4), np.float32)                       # 160 bytes
    t = torch.zeros(5, dtype=torch.float64)                 # 40
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))          # data 12 + indices 12 + indptr 16
    table = pa.table({"a": np.arange(4, dtype=np.int64)})   # 32
    m_bytes = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    assert payload_bytes((x, {"t": t, "m": m}, [table, b"abc"])) == 160 + 40 + m_bytes + 32 + 3
    assert payload_bytes(("s3://bucket/part", 3, 0.5, None, {"k": "v"})) == 0


def _record(node: str, kind: str, actor: str | None, storage: int, objects: int) -> dict:
    return {"kind": kind, "node": node, "address": "10.0.0.1", "hostname": "h", "actor": actor,
            "storage": storage, "objects": objects}


def test_node_usage_counts_an_actor_once_and_keeps_the_driver_apart():
    records = [_record("a", "mic-map", None, 10, 100), _record("a", "mic-map", None, 10, 100),
               _record("b", "fuse", "actor-1", 0, 50), _record("b", "fuse", "actor-1", 0, 5),
               _record("b", "topk-shard", "actor-2", 0, 7)]
    nodes = node_usage(records, driver=_record("a", "driver", None, 1000, 0))
    assert nodes["a"]["tasks"] == {"mic-map": 2} and nodes["a"]["actors"] == {}
    assert nodes["b"]["actors"] == {"fuse": 1, "topk-shard": 1} and nodes["b"]["tasks"] == {}
    assert (nodes["a"]["bytes_from_storage"], nodes["a"]["bytes_from_objects"],
            nodes["a"]["bytes_read"]) == (20, 200, 220)
    assert nodes["b"]["bytes_read"] == 62
    assert nodes["a"]["driver_bytes_read"] == 1000 and "driver_bytes_read" not in nodes["b"]
    merged = merge_nodes(nodes, node_usage([_record("b", "align-train", "actor-3", 4, 6)]), None)
    assert merged["b"]["actors"] == {"fuse": 1, "topk-shard": 1, "align-train": 1}
    assert merged["b"]["bytes_read"] == 72 and merged["a"] == nodes["a"]


def test_meter_in_a_ray_task_records_its_node_and_reads(ray_local, ray_timeout, tmp_path):
    """A real task: its record names the node it ran on, the bytes it read through
    psqe_ray.io and the size of the array it was handed; a pool batch carries it through."""
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 1234)

    @ray_local.remote(num_cpus=0.5)
    def task(arr: np.ndarray, url: str) -> dict:
        from psqe_ray.io.fs import read_bytes, resolve

        meter = Meter("probe").add(arr)
        read_bytes(*resolve(url), url)
        return meter.take()

    arr = np.ones(100_000, np.float32)  # large enough to travel through the object store
    rec = ray_local.get(task.remote(arr, str(path)))
    assert rec["node"] == ray_local.get_runtime_context().get_node_id()
    assert (rec["kind"], rec["actor"], rec["storage"], rec["objects"]) == ("probe", None, 1234,
                                                                            arr.nbytes)
    batch = with_usage({"id": np.arange(3)}, rec)
    assert pop_usage(batch) == [rec] and set(batch) == {"id"}
