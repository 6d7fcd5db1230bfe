"""Ray tasks and actors of the distributed PSQE path (light imports: no torch, no PyG, so
that a fresh worker process starts them quickly).  Each wraps one ``core`` function and returns,
with its result, its :class:`~psqe_ray.distributed.runtime.Meter` record (node, bytes read)."""

from __future__ import annotations

import io
import os
import resource

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from psqe_ray.core.correction import expansion_candidates
from psqe_ray.core.fusion import fuse
from psqe_ray.core.sampling import sample_cluster
from psqe_ray.core.search import Searcher, SearchPlan, ShardIndex
from psqe_ray.distributed.runtime import Meter, with_usage
from psqe_ray.io.fs import is_local, read_bytes, resolve


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- remote functions ------------------------------------------------------------------------
@ray.remote(num_cpus=0.5)
def cluster_task(sim_l, sim_r, il, ir, budget, k, searcher: Searcher):
    meter = Meter("cluster-sample").add(sim_l, sim_r, il, ir)
    return (*sample_cluster(sim_l, sim_r, il, ir, budget, k, searcher), rss(), meter.take())


class Fuser:
    """Ray Data UDF: fused vectors of a batch of entity rows (``row < n_left``: left entity
    ``row``, else right entity ``row - n_left``), from the prepared modality matrices.  Each
    output batch carries the actor's usage record (:func:`runtime.with_usage`)."""

    def __init__(self, refs: list, names: list[str], weights: dict[str, float],
                 n_left: int) -> None:
        self.meter = Meter("fuse", actor=True)
        mats = ray.get(refs)
        self.meter.add(mats)
        k = len(names)
        self.sides = (dict(zip(names, mats[:k])), dict(zip(names, mats[k:])))
        self.weights, self.n_left = weights, n_left

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["data"]
        self.meter.add(rows)
        parts = []
        for side, sel in ((0, rows[rows < self.n_left]), (1, rows[rows >= self.n_left])):
            if len(sel):
                ids = sel - (self.n_left if side else 0)
                parts.append(fuse({m: v[ids] for m, v in self.sides[side].items()}, self.weights))
        order = np.concatenate([rows[rows < self.n_left], rows[rows >= self.n_left]])
        return with_usage({"id": order, "vector": np.concatenate(parts)}, self.meter.take())


@ray.remote(num_cpus=0.5)
class TopKShard:
    """One shard of a base side (:class:`~psqe_ray.core.search.ShardIndex`: exact, or an IVF
    index built once), answering top-k queries for the shard's rows with global ids."""

    def __init__(self, rows: np.ndarray, searcher: Searcher, plan: SearchPlan, i: int,
                 threads: int = 1) -> None:
        """``rows``: the base rows of shard ``i`` of ``plan`` (only those travel here);
        ``threads``: FAISS threads (the CPUs this actor was given)."""
        self.meter = Meter("topk-shard", actor=True).add(rows)
        if plan.kind == "ivf":
            import faiss

            faiss.omp_set_num_threads(int(threads))
        self.index = ShardIndex(rows, plan.bounds[i][0], plan.kind, plan.nlist[i],
                                plan.nprobe[i], searcher.seed, searcher.device)

    def search(self, query: np.ndarray, k: int):
        self.meter.add(query)
        return self.index.search(query, k), rss(), self.meter.take()


@ray.remote(num_cpus=0.5)
def mic_map(part_url: str, storage_options, left_vecs, right_vecs, searcher: Searcher):
    """Seeds of one partition: is the partner the top-1 among all seeds' right vectors?
    (``left_vecs`` / ``right_vecs``: row i = seed i's left / right entity vector.)"""
    meter = Meter("mic-map").add(left_vecs, right_vecs)
    pos = read_table(part_url, storage_options).column("position").to_numpy()
    _, ids = searcher.topk(left_vecs[pos], right_vecs, 1)
    return pos, ids[:, 0] == pos, rss(), meter.take()


@ray.remote(num_cpus=0.5)
def expand_map(part_url: str, out_url: str, storage_options, seed_l, seed_r, adj_l, adj_r,
                vec_l, vec_r, taken_l, taken_r, total, threshold_start, threshold_end):
    """Candidate pairs of one seed partition, written as Parquet for the reduce."""
    meter = Meter("expansion-map").add(seed_l, seed_r, adj_l, adj_r, vec_l, vec_r, taken_l,
                                       taken_r)
    t = read_table(part_url, storage_options)
    cand = expansion_candidates(t.column("position").to_numpy(), seed_l, seed_r, adj_l, adj_r,
                                vec_l, vec_r, taken_l, taken_r, total,
                                threshold_start=threshold_start, threshold_end=threshold_end)
    put_table(out_url, pa.table(cand), storage_options)
    return len(cand["position"]), rss(), meter.take()


def put_table(url: str, table: pa.Table, storage_options) -> None:
    fs, path = resolve(url, storage_options)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fs.pipe_file(path, parquet(table))


def read_table(url: str, storage_options) -> pa.Table:
    fs, path = resolve(url, storage_options)
    return pq.read_table(io.BytesIO(read_bytes(fs, path, url)))


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
