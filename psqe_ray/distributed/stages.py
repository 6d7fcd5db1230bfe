"""The Ray seed job's stage commits: each stage's output under ``OUT_URL/stages/<stage>/``,
named by the run (dataset, settings, code) and the stage, so that a rerun loads the committed
stages instead of recomputing them.

:class:`StageStore` is a part of :class:`~psqe_ray.distributed.psqe.RaySeedGenerator`: it wraps
the generator's ``_run_stage`` hook (commit the stage's seeds, blocks and clusters after it
runs; load them instead when committed), and uses the generator's state (``out_url``,
``run_id``, ``storage_options``, ``seeds_``, ``table_``, ``stages_``, ``stage_sets_``,
``resources_``, ``resumed_``) and accounting (``_res``, ``_get_usage``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psqe_ray.config import fingerprint
from psqe_ray.core.blocks import SIDES
from psqe_ray.core.psqe import SeedTable
from psqe_ray.core.step_meter import high_water_bytes
from psqe_ray.distributed.blocks import Sharded, block_url, read_block, write_task
from psqe_ray.distributed.tasks import parquet, read_table
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import exists, join, resolve
from psqe_ray.io.writer import DatasetWriter
from psqe_ray.runners.seeds import seeds_table

log = logging.getLogger(__name__)

STAGES = "stages"


class StageStore:
    """The stage commits of the Ray seed generator (see the module's text)."""

    def _stage_url(self, name: str) -> str:
        return join(self.out_url, STAGES, name)

    def _stage_fp(self, name: str) -> str:
        return fingerprint({"run": self.run_id, "stage": name})

    def _committed(self, name: str) -> Dataset | None:
        url = self._stage_url(name)
        fs, path = resolve(url, self.storage_options)
        if not exists(fs, join(path, "_MANIFEST.json"), url):
            return None
        ds = Dataset(url, storage_options=self.storage_options)
        if ds.manifest.get("fingerprint") != self._stage_fp(name):
            log.info("%s: committed by another run (different input or settings); recomputing",
                     url)
            return None
        return ds

    def _writer(self, name: str) -> DatasetWriter:
        url = self._stage_url(name)
        fs, path = resolve(url, self.storage_options)
        if exists(fs, path, url):  # a stale stage of another run, or one cut short by a kill
            fs.rm(path, recursive=True)
        return DatasetWriter(url, stage=name, fingerprint=self._stage_fp(name),
                             storage_options=self.storage_options, require_graph=False,
                             entity_counts=self._counts)

    def _read_blocks(self, entry: dict, root_url: str) -> tuple[Sharded, Sharded]:
        """A committed kind's blocks (manifest meta) back into the object store."""
        out = []
        for side in SIDES:
            refs, usage, bounds = [], [], []
            for a, b, rel in entry[side]:
                url = join(root_url, rel)
                ref, u = read_block.options(num_returns=2).remote(url, self.storage_options)
                refs.append(ref)
                usage.append(u)
                bounds.append((a, b))
            self._get_usage(usage)
            out.append(Sharded(refs, bounds, int(entry["dim"])))
        return out[0], out[1]

    def _commit_blocks(self, w: DatasetWriter, name: str, kind: str, left: Sharded,
                       right: Sharded) -> dict:
        """Write (or adopt, when a task already wrote them) a kind's blocks into the stage."""
        entry: dict[str, Any] = {"dim": left.dim}
        prefix = f"blocks/{kind}-{w.token}"
        jobs = []
        for side, x in (("left", left), ("right", right)):
            parts = []
            for i, (ref, (a, b)) in enumerate(zip(x.refs, x.bounds)):
                rel = block_url(prefix, side, i)
                if x.written:  # Stage II's rank 0 wrote them there already
                    rel = x.written[i]
                else:
                    jobs.append(write_task.remote(join(self._stage_url(name), rel), side, a, ref,
                                                  self.storage_options))
                w.adopt(rel)
                parts.append([a, b, rel])
            entry[side] = parts
        self._get_usage(jobs)
        return entry

    def _run_stage(self, name: str, run) -> dict:
        ds = self._committed(name)
        if ds is not None:
            return self._load_stage(name, ds)
        self._current = name
        t = time.perf_counter()
        with self._writer(name) as w:
            self._open_writer = w
            products = run()
            w.write("seeds", seeds_table(self))
            blocks = {kind: self._commit_blocks(w, name, kind, products[f"{kind}_left"],
                                                products[f"{kind}_right"])
                      for kind in ("fused", "learned") if f"{kind}_left" in products}
            if "cluster_left" in products:
                w.put_file("clusters.parquet", parquet(pa.table({
                    "side": ["left"] * len(products["cluster_left"])
                    + ["right"] * len(products["cluster_right"]),
                    "cluster": np.concatenate([products["cluster_left"],
                                               products["cluster_right"]])})), fixed=True)
            record = self.stages_[-1] if self.stages_ and self.stages_[-1]["name"] == name else None
            res = self._res(name, driver_peak_rss_bytes=high_water_bytes())
            if record is not None:
                record["resources"] = res
            w.commit(meta={"stage": name, "record": record, "resources": res,
                           "seed_set": name in self.stage_sets_,
                           "seconds": round(time.perf_counter() - t, 3),
                           "blocks": blocks,
                           **({"budgets": [int(b) for b in products["cluster_budgets"]]}
                              if "cluster_budgets" in products else {}),
                           "train_seconds": getattr(self, "train_seconds_", None)})
            self._open_writer = None
        return products

    def _load_stage(self, name: str, ds: Dataset) -> dict:
        """Set the generator's state to what it was right after stage ``name`` committed."""
        t = ds.table("seeds")
        acc = t.column("accepted").to_numpy(zero_copy_only=False)
        col = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        self.seeds_ = (col["left_id"][acc].astype(np.int64), col["right_id"][acc].astype(np.int64),
                       col["score"][acc].astype(np.float32), col["source"][acc].astype(object))
        self.table_ = SeedTable()
        rej = ~acc
        if rej.any():
            self.table_.add(col["left_id"][rej], col["right_id"][rej], col["score"][rej],
                            col["source"][rej].astype(object), "", False)
            self.table_.stage[-1] = col["stage"][rej].astype(object)
            self.table_.reason[-1] = col["reason"][rej].astype(object)
        meta = ds.manifest["meta"]
        if meta.get("record"):
            self.stages_.append({**meta["record"], "resumed": True})
        if meta.get("seed_set"):
            self.stage_sets_[name] = (self.seeds_[0].copy(), self.seeds_[1].copy())
        if meta.get("train_seconds") is not None:
            self.train_seconds_ = meta["train_seconds"]
        self.resources_[name] = {**meta.get("resources", {}), "resumed": True}
        self.resumed_.append(name)
        log.info("%-18s committed earlier: %d seeds (skipped)", name, len(self.seeds_[0]))
        products: dict[str, Any] = {}
        for kind, entry in (meta.get("blocks") or {}).items():
            products[f"{kind}_left"], products[f"{kind}_right"] = self._read_blocks(
                entry, self._stage_url(name))
        if "budgets" in meta and exists(ds.fs, join(ds.root, "clusters.parquet"),
                                        ds.url_of("clusters.parquet")):
            c = read_table(ds.url_of("clusters.parquet"), self.storage_options)
            lab = {s: c.filter(pc.equal(c.column("side"), s)).column("cluster").to_numpy()
                   for s in SIDES}
            products.update(cluster_left=lab["left"], cluster_right=lab["right"],
                            cluster_budgets=np.asarray(meta["budgets"], np.int64))
        return products
