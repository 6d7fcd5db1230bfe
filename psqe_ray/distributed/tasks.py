"""Ray tasks of the distributed PSQE path (light imports: no torch, no PyG, so
that a fresh worker process starts them quickly).  Each wraps one ``core`` function and returns,
with its result, its :class:`~psqe_ray.distributed.usage.Meter` record (node, bytes read)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from psqe_ray.core.blocks import dense, stack
from psqe_ray.core.correction import expansion_candidates
from psqe_ray.core.sampling import greedy_seeds, sample_cluster_counted
from psqe_ray.core.search import Searcher, SearchPlan, ShardIndex
from psqe_ray.core.step_meter import high_water_bytes
from psqe_ray.distributed.blocks import Rows, Sharded
from psqe_ray.distributed.usage import Meter
from psqe_ray.io.fs import read_bytes, resolve, write_bytes


# ---- remote functions ------------------------------------------------------------------------
@ray.remote(num_cpus=0.5)
def cluster_task(left_pieces: list, right_pieces: list, budget, k, searcher: Searcher):
    """Stage I inside one cluster: its rows from every block's piece ((ids, rows) per block,
    fetched here), then the greedy of :func:`~psqe_ray.core.sampling.sample_cluster`."""
    meter = Meter("cluster-sample")
    sides = []
    for pieces in (left_pieces, right_pieces):
        got = ray.get(list(pieces))
        meter.add(got)
        d = got[0][1].shape[1] if got else 0
        ids = np.concatenate([g[0] for g in got]) if got else np.zeros(0, np.int64)
        sides.append((ids, dense(stack([g[1] for g in got], d))))
    (il, sim_l), (ir, sim_r) = sides
    l, r, s, rejected = sample_cluster_counted(sim_l, sim_r, il, ir, budget, k, searcher)
    # the rejected candidates' score counts last: the report's histogram (not the seeds)
    return l, r, s, high_water_bytes(), meter.take(), rejected


@ray.remote(num_cpus=0.5)
def greedy_task(left: Sharded, right: Sharded, budget: int, searcher: Searcher):
    """The UVP baselines' whole-graph greedy, on one worker (their pivot modality gathered
    there, never in the driver)."""
    meter = Meter("greedy")
    xl, xr = Rows(left, meter).all(), Rows(right, meter).all()
    return (*greedy_seeds(xl, xr, budget, searcher=searcher), meter.take())


@ray.remote(num_cpus=0.5)
def topk_shard(blocks: list, searcher: Searcher, plan: SearchPlan, i: int, threads: int,
               query_blocks: list, k: int):
    """Shard ``i`` of ``plan`` over a base side (:class:`~psqe_ray.core.search.ShardIndex`:
    exact, or an IVF index) and the top-k of every query row among its rows, with global ids.
    ``blocks``: (reference, start, stop) of the base blocks that overlap the shard (only those
    are fetched); the queries are fetched block by block; ``threads``: FAISS threads (the CPUs
    this task was given).  A task, not an actor, so that Ray runs it again elsewhere when its
    node is lost (its inputs rebuilt from their lineage)."""
    meter = Meter("topk-shard")
    a, b = plan.bounds[i]
    got = ray.get([ref for ref, _, _ in blocks])
    meter.add(got)
    rows = dense(stack([x[max(a, s) - s:min(b, e) - s]
                        for x, (_, s, e) in zip(got, blocks)])) if got else None
    del got
    if plan.kind == "ivf":
        import faiss

        faiss.omp_set_num_threads(int(threads))
    index = ShardIndex(rows, a, plan.kind, plan.nlist[i], plan.nprobe[i], searcher.seed,
                       searcher.device)
    del rows
    scores, ids = [], []
    for ref in query_blocks:
        q = ray.get(ref)
        meter.add(q)
        s, got_ids = index.search(dense(q), k)
        scores.append(s)
        ids.append(got_ids)
    return (np.concatenate(scores), np.concatenate(ids)), high_water_bytes(), meter.take()


@ray.remote(num_cpus=0.5)
def mic_map(part_url: str, storage_options, left_vecs, right_vecs, searcher: Searcher):
    """Seeds of one partition: is the partner the top-1 among all seeds' right vectors?
    (``left_vecs`` / ``right_vecs``: row i = seed i's left / right entity vector.)"""
    meter = Meter("mic-map").add(left_vecs, right_vecs)
    pos = read_table(part_url, storage_options).column("position").to_numpy()
    _, ids = searcher.topk(left_vecs[pos], right_vecs, 1)
    return pos, ids[:, 0] == pos, high_water_bytes(), meter.take()


@ray.remote(num_cpus=0.5)
def expand_map(part_url: str, out_url: str, storage_options, seed_l, seed_r, adj_l, adj_r,
                vec_l, vec_r, taken_l, taken_r, total, threshold_start, threshold_end):
    """Candidate pairs of one seed partition, written as Parquet for the reduce."""
    meter = Meter("expansion-map").add(seed_l, seed_r, adj_l, adj_r, taken_l, taken_r)
    vec_l, vec_r = Rows(vec_l, meter), Rows(vec_r, meter)
    t = read_table(part_url, storage_options)
    cand = expansion_candidates(t.column("position").to_numpy(), seed_l, seed_r, adj_l, adj_r,
                                vec_l, vec_r, taken_l, taken_r, total,
                                threshold_start=threshold_start, threshold_end=threshold_end)
    put_table(out_url, pa.table(cand), storage_options)
    return len(cand["position"]), high_water_bytes(), meter.take()


def put_table(url: str, table: pa.Table, storage_options) -> None:
    fs, path = resolve(url, storage_options)
    write_bytes(fs, path, parquet(table), url)


def read_table(url: str, storage_options) -> pa.Table:
    fs, path = resolve(url, storage_options)
    return pq.read_table(io.BytesIO(read_bytes(fs, path, url)))


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
