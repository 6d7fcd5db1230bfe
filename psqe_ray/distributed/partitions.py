"""MIC and the Stage III expansion on Ray: map tasks over the seed table partitioned by left
entity id (Parquet partitions in a scratch folder of the stage), reduced on the driver.

:class:`PartitionedSeeds` is a part of :class:`~psqe_ray.distributed.psqe.RaySeedGenerator`
(its ``_mic_keep`` and ``_expansion_candidates`` hooks); it uses the generator's stage folders
(``_stage_url``), settings and accounting.
"""

from __future__ import annotations

import logging
import secrets

import numpy as np
import pyarrow as pa
import ray

from psqe_ray.distributed.runtime import cluster_cpus
from psqe_ray.distributed.stages import STAGES
from psqe_ray.distributed.tasks import expand_map, mic_map, put_table, read_table
from psqe_ray.io.fs import join, resolve

log = logging.getLogger(__name__)


class PartitionedSeeds:
    """The partitioned-seed-table hooks of the Ray seed generator (see the module's text)."""

    def _partitions(self, n_seeds: int) -> int:
        return max(1, min(self.config.distributed.partitions or cluster_cpus(), n_seeds))

    def _write_partitions(self, scratch: str, left: np.ndarray, right: np.ndarray) -> list[str]:
        """The seed list partitioned by left entity id (``left % P``), one Parquet part each."""
        p = self._partitions(len(left))
        urls = []
        pos = np.arange(len(left), dtype=np.int64)
        for i in range(p):
            m = left % p == i
            url = join(scratch, f"seeds-{i:04d}.parquet")
            put_table(url, pa.table({"position": pos[m], "left_id": left[m], "right_id": right[m]}),
                       self.storage_options)
            urls.append(url)
        return urls

    def _scratch(self, name: str) -> str:
        return join(self.out_url, STAGES, "_scratch", f"{name}-{secrets.token_hex(4)}")

    def _drop(self, url: str) -> None:
        """Remove a scratch folder (and the scratch root once empty)."""
        fs, path = resolve(url, self.storage_options)
        try:
            fs.rm(path, recursive=True)
            parent = path.rstrip("/").rsplit("/", 1)[0]
            if fs.exists(parent) and not fs.ls(parent):
                fs.rmdir(parent)
        except (FileNotFoundError, OSError):
            pass

    def _mic_keep(self, vec_l, vec_r):
        if len(vec_l) == 0:
            return np.zeros(0, bool)
        scratch = self._scratch("mic")
        try:
            l, r = self.seeds_[0], self.seeds_[1]
            urls = self._write_partitions(scratch, l, r)
            lref, rref = ray.put(vec_l), ray.put(vec_r)
            results = ray.get([mic_map.remote(u, self.storage_options, lref, rref, self.searcher)
                               for u in urls])
        finally:
            self._drop(scratch)
        keep = np.zeros(len(vec_l), bool)
        for pos, ok, _, _ in results:
            keep[pos] = ok
        self._res(self._current, partitions=len(urls),
                  worker_peak_rss_bytes=max(r[2] for r in results))
        self._account(r[3] for r in results)
        return keep

    def _expansion_candidates(self, l0, r0, pair, vec_l, vec_r, taken_l, taken_r):
        st = self.config.stage3
        scratch = self._scratch("expansion")
        try:
            urls = self._write_partitions(scratch, l0, r0)
            shared = [ray.put(x) for x in (l0, r0, pair.left.neighbours(), pair.right.neighbours())]
            # the vectors stay in their blocks: each map task fetches them (zero-copy on its
            # node) and reads the rows of its seeds' neighbours
            shared += [vec_l, vec_r] + [ray.put(x) for x in (taken_l, taken_r)]
            outs = [join(scratch, f"candidates-{i:04d}.parquet") for i in range(len(urls))]
            results = ray.get([expand_map.remote(u, o, self.storage_options, *shared, len(l0),
                                                  st.threshold_start, st.threshold_end)
                               for u, o in zip(urls, outs)])
            parts = [read_table(o, self.storage_options) for o in outs]
        finally:
            self._drop(scratch)
        t = pa.concat_tables(parts)
        self._res(self._current, partitions=len(urls), candidates=t.num_rows,
                  worker_peak_rss_bytes=max(r[1] for r in results))
        self._account(r[2] for r in results)
        return {c: t.column(c).to_numpy() for c in ("position", "left", "right", "score")}
