"""Row blocks: the whole-graph steps of Stage I written so that any cut of the rows into blocks
gives the same numbers.

The partitioned data flow (README "Partitioned data flow") never gathers an N x d matrix in one
process: each step maps over row blocks and reduces small results.  For the seeds to be the
same in-process and on any cluster, whatever the block size, every reduction here is
independent of the cut:

* the unit of randomness and of floating-point sums is the *chunk* (:data:`CHUNK` rows of one
  side); an execution block is any run of whole chunks (:func:`row_ranges`);
* a text model's vectors lose their graph's mean (:func:`side_means`), summed the same way;
* the missing-row fill (:func:`fill_block`) draws each chunk's random rows from a stream keyed
  by (seed, modality, side, chunk), from statistics summed chunk by chunk in chunk order
  (:func:`chunk_stats`, :func:`fill_stats`);
* K-means (:func:`kmeans`, :func:`cluster_sums`) sums the rows of each cluster in fixed point: every vector
  component becomes an integer held exactly in float64, so the sums are exact and their order
  does not matter; scores are computed one chunk at a time, the same matrix products wherever
  they run.

A block is a float32 ndarray or, when at most :data:`MAX_DENSITY` of it is non-zero (hashed
name n-grams, relation / attribute bags, their fusion), a scipy CSR matrix: about 8 bytes per
non-zero instead of 4 bytes per column.  Every step here works on one *dense* chunk at a time
(:func:`dense`), so the numbers do not depend on how a block is stored.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

SIDES = ("left", "right")
CHUNK = 4096            # rows: the unit of random draws, statistics and K-means scoring
_SCALE = float(2 ** 30)  # fixed point of K-means sums: exact in float64 up to 2**23 rows
_FILL = 21              # stage_rng purpose of the missing-row fill (psqe_ray.core.train)
_KMEANS = 22            # stage_rng purpose of the K-means initial centroids
MAX_DENSITY = 0.1       # a block at most this dense is stored as CSR (as the models take it)


def dense(x) -> np.ndarray:
    """A block (or a slice of one) as a float32 ndarray."""
    if sp.issparse(x):
        return x.toarray().astype(np.float32, copy=False)
    return np.asarray(x, np.float32)


def compact(x, max_density: float = MAX_DENSITY):
    """A block in its storage form: CSR (sorted indices, no stored zeros) when at most
    ``max_density`` of it is non-zero, else a dense float32 ndarray."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
        x.eliminate_zeros()
        x.sort_indices()
        nnz = x.nnz
    else:
        x = np.asarray(x, np.float32)
        nnz = np.count_nonzero(x)
    if x.shape[0] and x.shape[1] and nnz <= max_density * x.shape[0] * x.shape[1]:
        return x if sp.issparse(x) else sp.csr_matrix(x)
    return dense(x)


def nonzeros(x) -> int:
    return x.nnz if sp.issparse(x) else int(np.count_nonzero(x))


def stack(blocks: list, dim: int | None = None):
    """Row blocks as one matrix: CSR when every block is CSR, else a dense ndarray."""
    if not blocks:
        return np.zeros((0, dim or 0), np.float32)
    if all(sp.issparse(b) for b in blocks):
        return sp.vstack(blocks, format="csr", dtype=np.float32)
    return np.concatenate([dense(b) for b in blocks])


def by_chunk(fn, x, chunk: int = CHUNK):
    """``fn(a, dense rows a:a+chunk)`` over the chunks of a block, results in order."""
    return [fn(a, dense(x[a:a + chunk])) for a in range(0, x.shape[0], chunk)]


def map_rows(fn, x, chunk: int = CHUNK):
    """A block's rows through a row-wise ``fn`` one dense chunk at a time, kept in the
    storage form of :func:`compact` (the same numbers as ``fn`` over the whole block)."""
    if x.shape[0] == 0:
        return dense(x)
    return compact(stack([compact(y) for y in by_chunk(fn, x, chunk)]))


def row_ranges(n: int, rows: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """Cut ``n`` rows into blocks of about ``rows`` rows (a whole number of chunks each)."""
    step = max(1, -(-max(1, rows) // chunk)) * chunk
    return [(a, min(n, a + step)) for a in range(0, n, step)] or [(0, 0)]


def modality_key(name: str) -> int:
    """A stable integer per modality name (keys its random streams)."""
    return zlib.crc32(name.encode())


def stage_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for (seed, key...): the same wherever it is created."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, key)]))


def chunk_stats(x: np.ndarray, present: np.ndarray, start: int, chunk: int = CHUNK
                ) -> np.ndarray:
    """Per-chunk (count, sum, sum of squares) of the present rows of a block that starts at row
    ``start`` (a chunk boundary): float64 (chunks, 1 + 2 d)."""
    if start % chunk:
        raise ValueError(f"a block must start on a chunk boundary ({chunk} rows), not {start}")
    d = x.shape[1]
    out = np.zeros((-(-x.shape[0] // chunk), 1 + 2 * d))
    for j, a in enumerate(range(0, x.shape[0], chunk)):
        rows = dense(x[a:a + chunk])[present[a:a + chunk]].astype(np.float64)
        out[j, 0] = len(rows)
        out[j, 1:1 + d] = rows.sum(axis=0)
        out[j, 1 + d:] = np.square(rows).sum(axis=0)
    return out


def fill_stats(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) float32 (d,) of the present rows from every chunk's stats, in chunk order
    (both sides' blocks, left first); None when no row is present."""
    s = np.concatenate(chunks).sum(axis=0)
    if s[0] == 0:
        return None
    d = (len(s) - 1) // 2
    mean = s[1:1 + d] / s[0]
    var = np.maximum(s[1 + d:] / s[0] - np.square(mean), 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


@dataclass(frozen=True)
class Prep:
    """How one modality's raw rows are prepared: the fill statistics (:func:`fill_stats`, None:
    no fill) and, for a centred modality, side -> the graph's mean (:func:`side_means`)."""

    fill: tuple | None = None
    centre: dict | None = None

    def rows(self, x, present: np.ndarray, start: int, seed: int, modality: str, side: str,
             chunk: int = CHUNK):
        """:func:`prepare_rows` of one block of ``side``."""
        return prepare_rows(x, present, start, self.fill, seed, modality, side, chunk,
                            None if self.centre is None else self.centre[side])


def side_means(chunks: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray] | None:
    """side -> float32 (d,) mean of that graph's present rows, from its chunks' stats
    (:func:`chunk_stats`, in chunk order); None when a side has no present row."""
    stats = {side: fill_stats(parts) for side, parts in chunks.items()}
    if any(st is None for st in stats.values()):
        return None
    return {side: st[0] for side, st in stats.items()}


def centred_stats(stats: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Chunk stats (:func:`chunk_stats`) of the same rows less ``mean`` (the statistics the
    fill of a centred modality draws from): (n, S - n m, Q - 2 m S + n m^2)."""
    out = stats.copy()
    d = (stats.shape[1] - 1) // 2
    n, m = stats[:, :1], mean.astype(np.float64)[None, :]
    out[:, 1:1 + d] = stats[:, 1:1 + d] - n * m
    out[:, 1 + d:] = stats[:, 1 + d:] - 2 * m * stats[:, 1:1 + d] + n * np.square(m)
    return out


def fill_block(x: np.ndarray, present: np.ndarray, start: int, stats, seed: int,
               modality: str, side: int, chunk: int = CHUNK) -> np.ndarray:
    """Rows of a block with absent rows replaced by N(mean, std) per dimension (PSQE's fill of a
    missing image); chunk j of the side draws from its own stream, so any block cut agrees."""
    if stats is None or present.all():
        return x
    mean, std = stats
    out = x.copy()
    for a in range(0, len(x), chunk):
        miss = np.flatnonzero(~present[a:a + chunk])
        if len(miss):
            rng = stage_rng(seed, _FILL, modality_key(modality), side, (start + a) // chunk)
            out[a + miss] = (mean + std * rng.standard_normal((len(miss), x.shape[1]))
                             ).astype(np.float32)
    return out


def kmeans_init(n: int, k: int, seed: int) -> np.ndarray:
    """Row numbers (over both sides' rows, left first) of the candidate rows the initial
    centroids are chosen from: ``8 k`` rows drawn by the seed (all rows when fewer)."""
    m = min(n, 8 * k)
    return np.sort(stage_rng(seed, _KMEANS).choice(n, size=m, replace=False))


def seed_centroids(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Greedy k-means++ over the candidate rows (a few times k: cheap wherever it runs): each
    step draws ``2 + log k`` rows by squared distance and keeps the one that lowers the total
    distance most.  ``k`` unit centroids, far apart, so that Lloyd steps start near distinct
    groups."""
    rng = stage_rng(seed, _KMEANS, 1)
    rows = _normalise(np.asarray(rows, np.float32))
    trials = 2 + int(np.log(max(k, 1)))
    chosen = [int(rng.integers(len(rows)))]
    dist = np.maximum(1.0 - rows @ rows[chosen[0]], 0.0).astype(np.float64)
    for _ in range(1, k):
        if dist.sum() <= 0:
            cand = rng.integers(len(rows), size=trials)
        else:
            cand = rng.choice(len(rows), size=trials, p=dist / dist.sum())
        new = np.minimum(dist[None, :], np.maximum(1.0 - rows[cand] @ rows.T, 0.0))
        best = int(np.argmin(new.sum(axis=1)))
        chosen.append(int(cand[best]))
        dist = new[best]
    return rows[chosen]


def _normalise(c: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(c, axis=1, keepdims=True)
    return (c / np.maximum(n, 1e-12)).astype(np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """int64 label per row: the centroid of largest inner product (ties: smaller label), scored
    one chunk at a time (a block starts on a chunk boundary)."""
    out = np.empty(x.shape[0], np.int64)
    for a in range(0, x.shape[0], chunk):
        out[a:a + chunk] = np.argmax(dense(x[a:a + chunk]) @ centroids.T, axis=1)
    return out


def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int, chunk: int = CHUNK) -> np.ndarray:
    """float64 (k, 1 + d): row count and the fixed-point sum of each cluster's rows (exact
    integers, so blocks add up in any order)."""
    out = np.zeros((k, 1 + x.shape[1]))
    out[:, 0] = np.bincount(labels, minlength=k)
    for a in range(0, x.shape[0], chunk):
        q = dense(x[a:a + chunk]).astype(np.float64)
        q *= _SCALE
        np.rint(q, out=q)
        onehot = np.zeros((k, len(q)))
        onehot[labels[a:a + chunk], np.arange(len(q))] = 1.0
        out[:, 1:] += onehot @ q  # integer sums below 2**53: exact in any order
    return out


def update_centroids(sums: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """New unit centroids from the summed cluster sums; an empty cluster keeps its centroid."""
    new = _normalise(sums[:, 1:] / _SCALE)
    empty = sums[:, 0] == 0
    new[empty] = centroids[empty]
    return new


def kmeans(blocks: list[np.ndarray], k: int, *, iters: int = 20, seed: int = 42,
           chunk: int = CHUNK) -> np.ndarray:
    """Spherical K-means over row blocks held in this process (the reference of the block-wise
    run on Ray): int64 labels of all rows, blocks in order.  Lloyd steps from ``k`` initial rows
    drawn by the seed; the same labels whatever the blocks."""
    n = sum(b.shape[0] for b in blocks)
    if k <= 1 or n <= k:
        return np.zeros(n, np.int64) if k <= 1 else np.arange(n, dtype=np.int64)
    centroids = seed_centroids(take_rows(blocks, kmeans_init(n, k, seed)), k, seed)
    for _ in range(iters):
        sums = sum(cluster_sums(b, assign(b, centroids, chunk), k, chunk) for b in blocks)
        centroids = update_centroids(sums, centroids)
    return np.concatenate([assign(b, centroids, chunk) for b in blocks])


def take_rows(blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows (global numbers over the blocks in order) gathered from a list of blocks."""
    starts = np.cumsum([0] + [b.shape[0] for b in blocks])
    out = np.empty((len(rows), blocks[0].shape[1]), np.float32)
    for i, b in enumerate(blocks):
        m = (rows >= starts[i]) & (rows < starts[i + 1])
        if m.any():
            out[m] = dense(b[rows[m] - starts[i]])
    return out


def block_stats(x: np.ndarray, present: np.ndarray, start: int, sums: bool,
                chunk: int = CHUNK) -> dict:
    """What :meth:`psqe_ray.core.psqe.SeedGenerator.check` needs of a block: present rows, non-zero columns and
    (``sums``: the modality is filled or centred) the per-chunk sums of :func:`chunk_stats`."""
    if sp.issparse(x):
        nz = np.zeros(x.shape[1], bool)
        nz[x.indices[x.data != 0]] = True
    else:
        nz = x.any(axis=0)
    return {"present": int(present.sum()), "any": nz,
            "chunks": chunk_stats(x, present, start, chunk) if sums else None}


def prepare_rows(x: np.ndarray, present: np.ndarray, start: int, fill, seed: int, modality: str,
                 side: str, chunk: int = CHUNK, centre: np.ndarray | None = None) -> np.ndarray:
    """A block's prepared rows: present rows less ``centre`` (the side's mean, or None), absent
    rows filled (``fill``: :func:`fill_stats`, or None for no fill), then L2-normalised; in the
    storage form of :func:`compact`."""
    from psqe_ray.core.fusion import l2_normalize

    def prep(a: int, rows: np.ndarray) -> np.ndarray:
        if centre is not None:
            keep = present[a:a + chunk]
            rows = np.where(keep[:, None], rows - centre, np.float32(0)).astype(np.float32)
        if fill is not None:
            rows = fill_block(rows, present[a:a + chunk], start + a, fill, seed, modality,
                              SIDES.index(side), chunk)
        return l2_normalize(rows)

    return map_rows(prep, x, chunk)


def fuse_rows(blocks: dict, weights: dict[str, float], chunk: int = CHUNK):
    """One block's fused vectors (:func:`psqe_ray.core.fusion.fuse`) from its prepared modality
    blocks, one dense chunk at a time, in the storage form of :func:`compact`."""
    from psqe_ray.core.fusion import fuse

    names = sorted(blocks)
    first = blocks[names[0]]
    return map_rows(lambda a, _: fuse({m: dense(blocks[m][a:a + chunk]) for m in names},
                                      weights), first, chunk)
