"""The pipeline runner (``psqe-ray run``, ``jobs/run.py``): encode -> seeds -> aligner ->
``report.json`` + ``report.html``, each step committed in its own folder under the output
(``seeds/``, ``align/``) and reused by a rerun.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from psqe_ray import __version__
from psqe_ray.config import PSQEConfig, fingerprint, reproducibility, to_dict
from psqe_ray.core.step_meter import StepMeter
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions, join
from psqe_ray.report.html import render_html
from psqe_ray.runners.align import run_align
from psqe_ray.runners.engine import Engine
from psqe_ray.runners.output import StepOutput
from psqe_ray.runners.seeds import run_seeds


def run_pipeline(dataset_url: str, out_url: str, cfg: PSQEConfig, *,
                 storage_options: StorageOptions = None, engine: Engine | None = None,
                 encode: Callable[[], list[dict]] | None = None) -> dict[str, Any]:
    """encode (``encode()`` -> the encoders' results, when given) -> seeds into
    ``out_url``/seeds -> aligner into ``out_url``/align -> ``report.json`` + ``report.html`` at
    ``out_url``, all on ``engine`` (default: this process; the pipeline job: Ray, whose
    per-node usage of every step goes into the report's ``nodes``).  A rerun reuses the
    committed seeds and alignment.
    """
    engine = engine or Engine()
    with engine.session():
        return _run_pipeline(dataset_url, out_url, cfg, storage_options, engine, encode)


def _run_pipeline(dataset_url: str, out_url: str, cfg: PSQEConfig,
                  storage_options: StorageOptions, engine: Engine,
                  encode: Callable[[], list[dict]] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg.check()
    # encoding first (it updates the dataset, and is skipped when up to date): the run is
    # named by the dataset as the seeds will read it
    t = time.perf_counter()
    with StepMeter() as encode_meter:
        encoded = encode() if encode else []
    seconds = {"encode": round(time.perf_counter() - t, 3) if encode else 0.0}
    ds = Dataset(dataset_url, storage_options=storage_options)
    fp = fingerprint({"dataset": ds.manifest["fingerprint"], "config": to_dict(cfg),
                      "code": __version__})
    with StepOutput(out_url, stage="run", fingerprint=fp, result="report.json",
                    what="this run", storage_options=storage_options, keep=("seeds", "align"),
                    inputs={"dataset": ds.manifest["fingerprint"]}) as out:
        if out.reused is not None:
            return out.reused
        t = time.perf_counter()
        seed_report = run_seeds(dataset_url, join(out_url, "seeds"), cfg,
                                storage_options=storage_options, engine=engine)
        seconds["seeds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        metrics = run_align(dataset_url, join(out_url, "seeds"), join(out_url, "align"), cfg,
                            storage_options=storage_options, engine=engine)
        seconds["align"] = round(time.perf_counter() - t, 3)
        seconds["total"] = round(time.perf_counter() - t0, 3)
        report = {"pipeline": "psqe-ray run", "dataset": dataset_url, "out": out_url,
                  "recipe": cfg.align.recipe, "seconds": seconds, "seeds": seed_report,
                  "align": metrics, "config": to_dict(cfg), "code_version": __version__,
                  "reproducibility": reproducibility(cfg),
                  "outputs": {"seeds": join(out_url, "seeds", "seeds.parquet"),
                              "alignment": join(out_url, "align", "alignment.parquet")}}
        if encoded:
            report["encode"] = encoded
        if encode:  # the steps of the seeds and the aligner: their own reports' ``profile``
            report["profile"] = [{"step": "encode", **encode_meter.record()}]
        report.update(engine.report_extras(report))
        out.commit(report, files=[("report.html", render_html(report).encode())],
                   meta={"dataset": dataset_url, "recipe": cfg.align.recipe})
    return report
