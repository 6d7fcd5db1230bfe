"""One search layer for every top-k of psqe-ray: exact below a size threshold, FAISS IVF above.

Every nearest-neighbour question of the pipeline goes through :class:`Searcher`: Stage I's
in-cluster candidates and the UVP baselines (:mod:`psqe_ray.core.sampling`), Stage II's global
sampling (paper 4.2), MIC's top-1 among the seeds (4.2.2, and the Stage III recheck), the
aligner's mutual-nearest-neighbour rounds, the final alignment and the evaluation (the gold
partner's rank and the CSLS neighbourhoods).  The same object plans the search; the in-process
path runs the shards one after the other, the Ray path runs one task per shard, and both merge
the shard results with :func:`~psqe_ray.core.topk.merge_topk` (associative, commutative), so the
two paths give identical bits.

The plan is a function of the base size ``m`` only (never of the machine, the CPU count or the
cluster), so the result is too:

* ``m <= exact_below`` (default 50,000) or ``index=flat``: exact blocked search
  (:func:`~psqe_ray.core.topk.topk_search`); any split into shards gives the same answer.
* otherwise ``index=ivf``: the base is cut into ``ceil(m / shard_rows)`` equal shards (at most
  ``shard_rows`` = 1,000,000 rows each); every shard gets its own ``faiss.IndexIVFFlat`` (inner
  product) with

      nlist  = clamp(round(4 sqrt(m_s)), 1, m_s // 39)        (m_s: the shard's rows)
      nprobe = clamp(min(ceil(nlist / 8), ceil(SCAN_ROWS * nlist / m_s)), 16, nlist)

  i.e. FAISS's usual 4 sqrt(N) lists (at least 39 training points each) and 1/8 of them probed
  (at least 16), but never more lists than hold :data:`SCAN_ROWS` (16,384) base rows on
  average.  Below ~130,000 rows the eighth is the smaller (1,265 / 159 at 100K); above, the
  row budget is (2,530 / 104 at 400K, 4,000 / 66 at 1M), so a query scores at most ~16K rows
  plus the ``nlist`` centroids and the search grows as m^1.5 at worst instead of m^2.  The
  coarse k-means trains on at most :data:`TRAIN_PER_LIST` (80) rows per list: all rows up to
  ~100K, a seeded sample above, so building an index grows linearly in m.

  Measured recall@10 against exact search (BENCHMARKS.md "Search layer, devices
  and scale"): .997 on DBP15K fr_en's Stage II vectors, but .93-.97 on the synthetic 100k pair
  and .85 on fr_en's aligner vectors, whose 2nd-10th neighbours are near ties (top-1 agreement
  .97-.99).  Up to the row budget a query scores about ``m / 8`` rows, a constant factor below
  exact search; above it, recall falls as the share of lists probed falls (measured at 400K in
  BENCHMARKS.md); ``search.nprobe`` trades recall for time.

IVF only *proposes* candidates (``k + 8`` per query and shard); they are rescored with the
canonical inner product (:func:`~psqe_ray.core.topk.canonical_scores`) and ordered by (score
desc, id asc), so a result never depends on BLAS rounding, and a missed true neighbour is the
only error an approximate search can make.  Zero query rows (an absent modality) are answered
without search, as in the exact path: every score is 0, the smallest ids win.

Device: ``device="cuda"`` moves each IVF shard to the GPU when FAISS has GPU support
(``faiss-gpu``); candidates are rescored on the CPU in both cases, so the output is the same.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np

from psqe_ray.core.progress import Progress
from psqe_ray.core.topk import (TopK, canonical_scores, empty_topk, merge_topk,
                                topk_from_candidates, topk_search, topk_search_both)

__all__ = ["INDEXES", "SCAN_ROWS", "SearchPlan", "Searcher", "ShardIndex"]

INDEXES = ("auto", "flat", "ivf")
_IVF_SLACK = 8            # candidates asked of IVF beyond k, rescored canonically
_QUERY_CHUNK = 32768      # query rows per IVF call (bounds the candidate buffers)
_BIG_BATCH = 2048         # query rows from which the bucketed (BLAS) IVF search pays off
SCAN_ROWS = 16384         # base rows an IVF query scores at most, on average (nprobe rule)
_RESCORE_PAIRS = 65536    # IVF candidates rescored per slice (bounds the gathered vectors)
PROGRESS_ROWS = 8192      # base rows per exact shard when a search reports its progress
TRAIN_PER_LIST = 80       # k-means training rows per IVF list at most (a seeded sample above)


@dataclass(frozen=True)
class SearchPlan:
    """How a base of ``rows`` rows is searched.

    kind: "exact" or "ivf"; bounds: ``(start, stop)`` row ranges of the shards, in order;
    nlist / nprobe: per shard (0 for exact).
    """

    kind: str
    rows: int
    bounds: tuple[tuple[int, int], ...]
    nlist: tuple[int, ...]
    nprobe: tuple[int, ...]

    def describe(self) -> dict:
        return {"kind": self.kind, "rows": self.rows, "shards": len(self.bounds),
                "nlist": list(self.nlist), "nprobe": list(self.nprobe)}


def ivf_lists(rows: int) -> int:
    """nlist for ``rows`` base rows: round(4 sqrt(rows)), at least 39 training rows per list."""
    return int(max(1, min(round(4.0 * math.sqrt(rows)), rows // 39)))


def ivf_probes(nlist: int, rows: int) -> int:
    """nprobe for ``nlist`` lists over ``rows`` base rows: an eighth of the lists, but no more
    than hold :data:`SCAN_ROWS` rows on average; at least 16, at most ``nlist``."""
    budget = math.ceil(SCAN_ROWS * nlist / max(int(rows), 1))
    return int(min(nlist, max(16, min(math.ceil(nlist / 8), budget))))


class Searcher:
    """Plans and runs top-k inner-product searches (module docstring).

    Args:
        exact_below: base sizes at or below this are searched exactly.
        index: "auto" (exact up to ``exact_below``, IVF above), "flat" (always exact) or
            "ivf" (always IVF; tests and recall measurements use this at small sizes).
        nlist, nprobe: 0 = the rule of the module docstring, else this value for every shard.
        shard_rows: IVF shards hold at most this many rows.
        depth: how many candidates the approximate evaluation looks at per query (the
            partner's rank beyond it is not known).
        seed: seed of the IVF coarse quantiser's k-means.
        device: "cpu" or "cuda[:N]" (IVF shards on that GPU when faiss has GPU support).
    """

    def __init__(self, exact_below: int = 50_000, index: str = "auto", nlist: int = 0,
                 nprobe: int = 0, shard_rows: int = 1_000_000, depth: int = 50, seed: int = 0,
                 device: str = "cpu") -> None:
        if index not in INDEXES:
            raise ValueError(f"search index must be one of {INDEXES}, got {index!r}")
        if min(exact_below, nlist, nprobe) < 0 or shard_rows < 1 or depth < 1:
            raise ValueError("search: exact_below, nlist, nprobe >= 0; shard_rows, depth >= 1")
        self.exact_below, self.index = int(exact_below), index
        self.nlist, self.nprobe = int(nlist), int(nprobe)
        self.shard_rows, self.depth = int(shard_rows), int(depth)
        self.seed, self.device = int(seed), device

    @classmethod
    def from_config(cls, cfg, seed: int = 0, device: str = "cpu") -> "Searcher":
        """From a :class:`~psqe_ray.config.SearchConfig` (``None``: the defaults)."""
        if cfg is None:
            return cls(seed=seed, device=device)
        return cls(exact_below=cfg.exact_below, index=cfg.index, nlist=cfg.nlist,
                   nprobe=cfg.nprobe, shard_rows=cfg.shard_rows, depth=cfg.depth, seed=seed,
                   device=device)

    # -- planning ---------------------------------------------------------------------------
    def is_exact(self, rows: int) -> bool:
        return self.index == "flat" or (self.index == "auto" and rows <= self.exact_below) \
            or rows == 0

    def one_pass(self, n_left: int, n_right: int) -> bool:
        """Whether :meth:`topk_both` answers both ways in one pass (both searches exact)."""
        return self.is_exact(n_left) and self.is_exact(n_right)

    def plan(self, rows: int, shards: int = 1) -> SearchPlan:
        """The plan for a base of ``rows`` rows.  ``shards`` only matters for exact search
        (any split gives the same answer there: the Ray path asks for one per CPU)."""
        rows = int(rows)
        if self.is_exact(rows):
            bounds = _bounds(rows, max(1, min(int(shards), rows)))
            return SearchPlan("exact", rows, bounds, (0,) * len(bounds), (0,) * len(bounds))
        bounds = _bounds(rows, max(1, math.ceil(rows / self.shard_rows)))
        nlist = tuple(min(b - a, self.nlist) if self.nlist else ivf_lists(b - a)
                      for a, b in bounds)
        nprobe = tuple(min(nl, self.nprobe) if self.nprobe else ivf_probes(nl, b - a)
                       for nl, (a, b) in zip(nlist, bounds))
        return SearchPlan("ivf", rows, bounds, nlist, nprobe)

    def shard(self, base: np.ndarray, plan: SearchPlan, i: int) -> "ShardIndex":
        """Shard ``i`` of ``plan`` over ``base`` (the whole base side), built."""
        a, b = plan.bounds[i]
        return ShardIndex(base[a:b], a, plan.kind, plan.nlist[i], plan.nprobe[i], self.seed,
                          self.device)

    # -- searching --------------------------------------------------------------------------
    def topk(self, query: np.ndarray, base: np.ndarray, k: int, *,
             progress: str | None = None) -> TopK:
        """Per query row the (at most) k base rows with the largest inner product: scores
        (n, k) float32 canonical, ids (n, k) int64 row numbers of ``base``, (score desc, id
        asc), padded with (-inf, -1).  Exact when the plan is exact, else approximate.
        ``progress``: a label; the shards done are then shown on the driver
        (:class:`~psqe_ray.core.progress.Progress`), an exact search cut into shards of
        :data:`PROGRESS_ROWS` base rows for it (any split gives the same answer)."""
        query = np.ascontiguousarray(query, np.float32)
        base = np.ascontiguousarray(base, np.float32)
        k = int(min(k, len(base)))
        plan = self.plan(len(base), math.ceil(len(base) / PROGRESS_ROWS) if progress else 1)
        shown = Progress(progress, len(plan.bounds), "shards") if progress else None
        if len(plan.bounds) == 1:  # already (score desc, id asc): nothing to merge
            merged = self.shard(base, plan, 0).search(query, k)
            if shown is not None:
                shown.add(1)
            return merged
        merged = empty_topk(len(query), k)
        for i in range(len(plan.bounds)):
            merged = merge_topk(merged, self.shard(base, plan, i).search(query, k), k)
            if shown is not None:
                shown.add(1)
        return merged

    def topk_both(self, left: np.ndarray, right: np.ndarray, k: int, *,
                  progress: str | None = None) -> tuple[TopK, TopK]:
        """``(self.topk(left, right, k), self.topk(right, left, k))``, the same bits; when
        both plans are exact, from one pass over the score tiles
        (:func:`~psqe_ray.core.topk.topk_search_both`: the arithmetic once, not twice)."""
        k_lr, k_rl = int(min(k, len(right))), int(min(k, len(left)))
        # two searches with an IVF side, or when one side has fewer than k rows (the two
        # results then have different widths)
        if not self.one_pass(len(left), len(right)) or k_lr != k_rl:
            return (self.topk(left, right, k, progress=progress),
                    self.topk(right, left, k, progress=progress))
        shown = [None]

        def on_block(done: int, total: int) -> None:
            if progress is None:
                return
            if shown[0] is None:
                shown[0] = Progress(progress, total, "blocks")
            shown[0].add(done - shown[0].done)

        return topk_search_both(np.ascontiguousarray(left, np.float32),
                                np.ascontiguousarray(right, np.float32), k_lr,
                                on_block=on_block)


def _bounds(rows: int, n: int) -> tuple[tuple[int, int], ...]:
    """``n`` contiguous, nearly equal row ranges covering ``range(rows)``."""
    cuts = np.linspace(0, rows, n + 1).astype(int)
    return tuple((int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]))


def _gpu(index, device: str):
    """``index`` moved to the GPU of ``device`` when faiss has GPU support, else itself."""
    import faiss

    if not device.startswith("cuda") or not hasattr(faiss, "StandardGpuResources") \
            or faiss.get_num_gpus() < 1:
        return index, None
    dev = int(device.split(":", 1)[1]) if ":" in device else 0
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, dev, index), res


class ShardIndex:
    """Rows ``[offset, offset + len(base))`` of one base side, ready to answer top-k queries.

    Exact shards search with :func:`~psqe_ray.core.topk.topk_search`; IVF shards build a
    ``faiss.IndexIVFFlat`` once and rescore its candidates canonically from the vectors the
    index stores (a direct map, the same float32 values), so the shard holds the base once,
    not twice.  One Ray actor holds one of these on the distributed path.
    """

    def __init__(self, base: np.ndarray, offset: int, kind: str = "exact", nlist: int = 0,
                 nprobe: int = 0, seed: int = 0, device: str = "cpu") -> None:
        base = np.ascontiguousarray(base, np.float32)
        self.rows = len(base)
        self.offset, self.kind = int(offset), kind
        self.on_gpu = False
        self.base = base  # exact shards (and empty IVF ones) search it; IVF ones drop it
        self._ivf = self._res = self._stored = None
        if kind == "ivf" and len(base):
            import faiss

            d = base.shape[1]
            quantizer = faiss.IndexFlatIP(d)
            ivf = faiss.IndexIVFFlat(quantizer, d, int(nlist), faiss.METRIC_INNER_PRODUCT)
            ivf.cp.seed = int(seed)
            # the coarse k-means sees at most TRAIN_PER_LIST rows per list (FAISS samples
            # them with cp.seed): every row up to ~100K base rows, so its cost grows as
            # nlist^2 ~ m above, not m * nlist ~ m^1.5
            ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
            ivf.train(base)
            ivf.add(base)
            ivf.nprobe = int(nprobe)
            self._quantizer, self._stored = quantizer, ivf
            self._ivf, self._res = _gpu(ivf, device)
            ivf.make_direct_map()  # row -> its stored vector (CPU copy), for the rescoring
            self.on_gpu = self._res is not None
            if self.on_gpu:
                self._ivf.nprobe = int(nprobe)
            self.base = None

    def search(self, query: np.ndarray, k: int) -> TopK:
        """scores (n, k) float32, ids (n, k) int64 (global: shard offset added)."""
        query = np.ascontiguousarray(query, np.float32)
        k = int(min(k, self.rows))
        if self._ivf is None:
            return topk_search(query, self.base, k, base_offset=self.offset)
        scores, ids = empty_topk(len(query), k)
        if k == 0:
            return scores, ids
        norms = np.einsum("ij,ij->i", query, query)
        if not np.isfinite(norms).all():
            raise ValueError("query contains inf or nan")
        zero = norms == 0
        scores[zero], ids[zero] = 0.0, self.offset + np.arange(k)
        live = np.flatnonzero(~zero)
        kk = min(self.rows, k + _IVF_SLACK)
        for a in range(0, len(live), _QUERY_CHUNK):
            rows = live[a:a + _QUERY_CHUNK]
            cand = self._candidates(query[rows], kk)
            r, c = np.nonzero(cand >= 0)
            cols = cand[r, c].astype(np.int64)
            s = np.empty(len(cols), np.float32)
            # rescored a slice of candidates at a time: the stored vectors of its distinct
            # columns, never every candidate's vector at once
            for e in range(0, len(cols), _RESCORE_PAIRS):
                uniq, at = np.unique(cols[e:e + _RESCORE_PAIRS], return_inverse=True)
                s[e:e + _RESCORE_PAIRS] = canonical_scores(
                    query, self._stored.reconstruct_batch(uniq), rows[r[e:e + _RESCORE_PAIRS]],
                    at.ravel())
            part = topk_from_candidates(r, s, cols + self.offset, len(rows), k)
            scores[rows], ids[rows] = part
        return scores, ids

    def _candidates(self, q: np.ndarray, kk: int) -> np.ndarray:
        """IVF candidates (n, kk) int64 (local rows, -1 padding).  Large CPU batches use FAISS's
        big-batch search (queries bucketed per inverted list, one BLAS product per list: the
        same lists probed, several times faster than per-query scanning); small batches and
        GPU indexes use the index's own search."""
        if self.on_gpu or len(q) < _BIG_BATCH:
            return self._ivf.search(q, kk)[1]
        from faiss.contrib.big_batch_search import big_batch_search

        # verbose=0 still prints a line per list: 1 prints only stage names, captured here
        with contextlib.redirect_stdout(io.StringIO()):
            return big_batch_search(self._ivf, q, kk, method="knn_function", verbose=1)[1]
