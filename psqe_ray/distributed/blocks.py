"""The partitioned data flow of the Ray path: every N x d matrix as row blocks in the object
store, made and used by tasks; the driver holds object references and O(N) integers only.

A :class:`Sharded` is one side's matrix: a reference per row block (``distributed.block_rows``
rows, whole chunks of :mod:`psqe_ray.core.blocks`) and the blocks' row ranges.  A block is a
float32 ndarray or, when sparse enough, a scipy CSR matrix (:func:`psqe_ray.core.blocks.compact`:
the name n-grams, the bags and their fusion); what a task hands back to the driver is dense.  Tasks fetch
the blocks they need (zero-copy views when the object is on their node); :class:`Rows` gives
row access across them.  The same ``core`` functions run on each block as the in-process path
runs on whole sides, and every cross-block reduction is exact (``core.blocks``), so the seeds
do not depend on the block size or on the cluster.

Blocks a stage commits (fused and learned vectors) are written by the task that makes them, as
Parquet parts under the stage folder (``blocks/<kind>/<side>-<block>-<token>.parquet``); the
stage's manifest lists them, and a rerun reads them back block by block (a CSR block as
per-row ``indices`` / ``values`` lists).  Light imports (no
torch): a fresh worker starts these quickly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from psqe_ray.core.blocks import (assign, block_stats, cluster_sums, dense, fuse_rows, stack,
                                  take_rows)
from psqe_ray.core.features import Source, raw_rows
from psqe_ray.core.fusion import l2_normalize
from psqe_ray.core.topk import canonical_scores
from psqe_ray.distributed.usage import Meter
from psqe_ray.io.fs import join, read_bytes, resolve, write_bytes
from psqe_ray.schemas import feature_table, vectors_numpy


@dataclass
class Sharded:
    """One side's (n, dim) float32 matrix as row blocks (ndarray or CSR) in Ray's object
    store."""

    refs: list
    bounds: list[tuple[int, int]]
    dim: int
    written: list[str] | None = None  # the blocks' parts in a stage folder, when already written

    def __len__(self) -> int:
        return self.bounds[-1][1] if self.bounds else 0

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    def overlapping(self, a: int, b: int) -> list[tuple]:
        """(ref, start, stop) of the blocks that hold rows ``a:b``."""
        return [(r, s, e) for r, (s, e) in zip(self.refs, self.bounds) if s < b and e > a]


def put_sharded(x: np.ndarray, bounds: list[tuple[int, int]]) -> Sharded:
    """A matrix of this process cut into blocks in the object store (tests, small inputs)."""
    return Sharded([ray.put(np.ascontiguousarray(x[a:b], np.float32)) for a, b in bounds],
                   list(bounds), int(x.shape[1]))


@dataclass
class Joined:
    """Stage III's vectors of one side, never materialised: row i is the L2-normalised
    concatenation of the fused row i and the learned row i, made when a task reads it."""

    fused: Sharded
    learned: Sharded

    def __len__(self) -> int:
        return len(self.fused)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.fused), self.fused.dim + self.learned.dim


class Rows:
    """Row access over a :class:`Sharded` (or a :class:`Joined`) inside a task (its blocks
    fetched once: zero-copy on the task's node): ``x[ids]`` (dense), ``x.shape``, ``len(x)``."""

    def __init__(self, sharded: Sharded | Joined, meter: Meter | None = None) -> None:
        self.shape = sharded.shape
        self.parts = None
        if isinstance(sharded, Joined):
            self.parts = (Rows(sharded.fused, meter), Rows(sharded.learned, meter))
            return
        self.blocks = ray.get(list(sharded.refs))
        if meter is not None:
            meter.add(self.blocks)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        flat = ids.ravel()
        if self.parts is not None:  # row-wise, so the numbers of a whole joined matrix
            rows = l2_normalize(np.concatenate([p[flat] for p in self.parts], axis=1))
        else:
            rows = take_rows(self.blocks, flat)
        return rows.reshape(*ids.shape, self.shape[1])

    def all(self) -> np.ndarray:
        if self.parts is not None:
            return self[np.arange(self.shape[0])]
        return dense(stack(self.blocks, self.shape[1]))


def fetch_features(mods: dict, meter: Meter | None = None) -> dict:
    """In a training worker: modality -> model input over both graphs (left rows, then right),
    from every block of every prepared modality (``mods``: modality -> (left block refs, right
    block refs)): what :func:`psqe_ray.core.train.model_inputs` makes of the whole matrices,
    built without a dense copy of a sparse modality."""
    from psqe_ray.core.train import block_model_input

    out = {}
    for m, (left, right) in mods.items():
        blocks = ray.get(list(left) + list(right))
        if meter is not None:
            meter.add(blocks)
        out[m] = block_model_input(blocks)
        del blocks
    return out


def block_url(prefix: str, side: str, i: int) -> str:
    return f"{prefix.rstrip('/')}/{side}-{i:05d}.parquet"


def _sparse_table(side: str, start: int, x) -> pa.Table:
    """A CSR block as Parquet columns: side, entity_id, per-row ``indices`` and ``values``."""
    n = x.shape[0]
    offsets = pa.array(x.indptr.astype(np.int64))
    return pa.table({"side": pa.array([side] * n, pa.string()),
                     "entity_id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                     "indices": pa.LargeListArray.from_arrays(offsets, pa.array(
                         x.indices.astype(np.int32))),
                     "values": pa.LargeListArray.from_arrays(offsets, pa.array(
                         x.data.astype(np.float32)))},
                    metadata={"dim": str(x.shape[1])})


def _block_of(table: pa.Table):
    """A block back from its Parquet columns (dense ``vector``, or CSR ``indices``/``values``)."""
    if "indices" not in table.column_names:
        return np.ascontiguousarray(vectors_numpy(table), np.float32)
    import scipy.sparse as sp

    ind, val = table.column("indices").combine_chunks(), table.column("values").combine_chunks()
    dim = int(table.schema.metadata[b"dim"])
    return sp.csr_matrix((val.values.to_numpy(zero_copy_only=False).astype(np.float32),
                          ind.values.to_numpy(zero_copy_only=False),
                          ind.offsets.to_numpy(zero_copy_only=False)),
                         shape=(table.num_rows, dim))


def _write(url: str, side: str, start: int, x, storage_options) -> int:
    """A block as a Parquet part (the ``features/<kind>`` columns, or :func:`_sparse_table`'s
    for a CSR block); returns its size."""
    import scipy.sparse as sp

    buf = io.BytesIO()
    if sp.issparse(x):
        table = _sparse_table(side, start, x)
    else:
        table = feature_table(side, np.arange(start, start + len(x), dtype=np.int64), x,
                              np.ones(len(x), bool))
    pq.write_table(table, buf, compression="zstd")
    fs, path = resolve(url, storage_options)
    write_bytes(fs, path, buf.getvalue(), url)
    return len(buf.getvalue())


class BlockSink:
    """Rows of both sides arriving in order (left rows, then right rows, in runs of any
    length) written as Parquet parts ``root/prefix/<side>-<block>.parquet`` as soon as each
    block of ``bounds`` (side -> row ranges) is complete: a training worker's output, never
    whole in its memory.  :meth:`entry` is the manifest entry
    ``{"dim", side: [[start, stop, path relative to root], ...]}``."""

    def __init__(self, root: str, prefix: str, bounds: dict, storage_options) -> None:
        self.root, self.prefix, self.storage_options = root, prefix, storage_options
        self.todo = [(side, i, a, b) for side in ("left", "right")
                     for i, (a, b) in enumerate(bounds[side])]
        self.parts: dict = {"left": [], "right": []}
        self.pending: list = []
        self.held, self.dim = 0, None

    def add(self, rows: np.ndarray) -> None:
        """The next rows in order (float32 (r, dim))."""
        self.dim = int(rows.shape[1])
        if len(rows):
            self.pending.append(rows)
            self.held += len(rows)
        self._flush()

    def _flush(self) -> None:
        while self.todo and self.dim is not None \
                and self.held >= self.todo[0][3] - self.todo[0][2]:
            side, i, a, b = self.todo.pop(0)
            block = (np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]) \
                if self.pending else np.zeros((0, self.dim), np.float32)
            rel = block_url(self.prefix, side, i)
            _write(join(self.root, rel), side, a, block[:b - a], self.storage_options)
            self.parts[side].append([a, b, rel])
            rest = block[b - a:]
            self.pending, self.held = ([rest] if len(rest) else []), len(rest)

    def entry(self) -> dict:
        """The manifest entry, once every block is written."""
        self._flush()
        if self.todo or self.held:
            raise ValueError(f"block sink: {self.held} rows left over, {len(self.todo)} blocks "
                             "not complete")
        return {"dim": self.dim or 0, **self.parts}


def write_blocks(root: str, prefix: str, left: np.ndarray, right: np.ndarray, bounds: dict,
                 storage_options) -> dict:
    """Both sides' whole matrices through a :class:`BlockSink`; its manifest entry."""
    sink = BlockSink(root, prefix, bounds, storage_options)
    sink.add(left)
    sink.add(right)
    return sink.entry()


@ray.remote(num_cpus=0.5)
def write_task(url: str, side: str, start: int, x: np.ndarray, storage_options):
    """Commit one block: its Parquet part at ``url``; returns the usage record."""
    meter = Meter("write-block").add(x)
    _write(url, side, start, x, storage_options)
    return meter.take()


@ray.remote(num_cpus=0.5)
def read_block(url: str, storage_options):
    """A committed block back into the object store: (float32 rows or CSR, usage)."""
    meter = Meter("read-block")
    fs, path = resolve(url, storage_options)
    return _block_of(pq.read_table(io.BytesIO(read_bytes(fs, path, url)))), meter.take()


@ray.remote(num_cpus=0.5)
def gather_task(x: Sharded, ids: np.ndarray):
    """Rows ``ids`` (any order) of a sharded matrix, as one new block: (rows, usage)."""
    meter = Meter("gather-rows")
    return Rows(x, meter)[ids], meter.take()


@ray.remote(num_cpus=0.5)
def pair_scores_task(x: Sharded, x_ids: np.ndarray, y: Sharded, y_ids: np.ndarray):
    """Canonical inner products of the row pairs (x[x_ids[e]], y[y_ids[e]]): (float32 (P,),
    usage)."""
    meter = Meter("pair-scores")
    pos = np.arange(len(x_ids), dtype=np.int64)
    return canonical_scores(Rows(x, meter)[x_ids], Rows(y, meter)[y_ids], pos, pos), \
        meter.take()


def subset(x: Sharded, ids: np.ndarray, block_rows: int) -> tuple[Sharded, list]:
    """Rows ``ids`` of ``x``, in that order, as a new sharded matrix (blocks of ``block_rows``
    made by tasks; nothing passes through the caller) and the tasks' usage references."""
    ids = np.asarray(ids, np.int64)
    refs, usage, bounds = [], [], []
    for a in range(0, max(len(ids), 1), max(1, block_rows)):
        b = min(len(ids), a + block_rows)
        ref, u = gather_task.options(num_returns=2).remote(x, ids[a:b])
        refs.append(ref)
        usage.append(u)
        bounds.append((a, b))
    return Sharded(refs, bounds, x.dim), usage


# ---- features ----------------------------------------------------------------------------------
def _table_rows(dataset_url: str, storage_options, modality: str, side: str, start: int,
                stop: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``start:stop`` of a precomputed feature table (absent rows zero)."""
    from psqe_ray.io.dataset import Dataset

    x = np.zeros((stop - start, dim), np.float32)
    present = np.zeros(stop - start, bool)
    ds = Dataset(dataset_url, storage_options=storage_options)
    for part in ds.iter_parts(f"features/{modality}"):
        ids = part.column("entity_id")
        keep = pc.and_(pc.equal(part.column("side"), side),
                       pc.and_(pc.greater_equal(ids, start), pc.less(ids, stop)))
        t = part.filter(keep)
        if t.num_rows:
            rows = t.column("entity_id").to_numpy() - start
            x[rows] = vectors_numpy(t)
            present[rows] = t.column("present").to_numpy(zero_copy_only=False)
    return x, present


@ray.remote(num_cpus=0.5)
def raw_task(sources: dict[str, Source], side: str, start: int, stop: int, fc, names,
             dataset_url: str, storage_options, sums: dict[str, bool], chunk: int):
    """One block's raw modality rows: one return per modality ((x, present)), then the
    block's stats (modality -> :func:`~psqe_ray.core.blocks.block_stats`) and usage."""
    meter = Meter("features-raw")
    out, stats = [], {}
    for m, src in sources.items():
        table = _table_rows(dataset_url, storage_options, m, side, start, stop, src.dim) \
            if src.kind == "table" else None
        x, present = raw_rows(src, side, start, stop, fc, names=names, table=table)
        stats[m] = block_stats(x, present, start, sums[m], chunk)
        out.append((x, present))
    return (*out, (stats, meter.take()))


@ray.remote(num_cpus=0.5)
def prepare_task(names: list[str], side: str, start: int, preps: dict, seed: int, chunk: int,
                 *raw):
    """One block's prepared modality rows (centred, filled, normalised:
    :class:`~psqe_ray.core.blocks.Prep`): one return per modality, then the usage record."""
    meter = Meter("features-prepare").add(raw)
    out = [preps[m].rows(x, present, start, seed, m, side, chunk)
           for m, (x, present) in zip(names, raw)]
    return (*out, meter.take())


@ray.remote(num_cpus=0.5)
def fuse_task(names: list[str], weights: dict, chunk: int, *blocks):
    """One block's fused vectors from its prepared modality rows: (rows, usage)."""
    meter = Meter("fuse").add(blocks)
    return fuse_rows(dict(zip(names, blocks)), weights, chunk), meter.take()


@ray.remote(num_cpus=0.5)
def best_task(block, start: int, query: np.ndarray, k: int):
    """Exact top-``k`` (scores, global ids) of each query row among one block's rows (the
    signal test's searches: a few thousand queries, no shard actor), and the usage."""
    from psqe_ray.core.topk import topk_search

    meter = Meter("signal-search").add(block, query)
    s, i = topk_search(query, dense(block), k)
    return (s, np.where(i >= 0, i + start, -1)), meter.take()


# ---- Stage I -----------------------------------------------------------------------------------
@ray.remote(num_cpus=0.5)
def take_task(block, rows: np.ndarray, kind: str = "take-rows"):
    """Rows (block-local numbers) of one block, dense: (rows, usage); ``kind`` names the work
    in the usage records."""
    meter = Meter(kind).add(block)
    return np.ascontiguousarray(dense(block[rows])), meter.take()


@ray.remote(num_cpus=0.5)
def kmeans_task(block: np.ndarray, centroids: np.ndarray, k: int, final: bool, chunk: int):
    """One Lloyd step's share of a block: its cluster sums (or, ``final``, its labels)."""
    meter = Meter("kmeans").add(block)
    labels = assign(block, centroids, chunk)
    return (labels if final else cluster_sums(block, labels, k, chunk)), meter.take()


@ray.remote(num_cpus=0.5)
def split_task(block: np.ndarray, labels: np.ndarray, start: int, k: int):
    """A block cut by cluster: ``k`` returns of (entity ids, rows), then the usage record."""
    meter = Meter("cluster-split").add(block)
    out = []
    for c in range(k):
        sel = np.flatnonzero(labels == c)
        out.append((sel.astype(np.int64) + start, block[sel]))
    return (*out, meter.take())
