"""Distributed PSQE (``jobs/seeds.py`` on an embedded Ray) against the in-process path.

    python benchmarks/distributed.py --pair fr_en
    python benchmarks/distributed.py --synth 100000 [--set stage2.epochs=300 ...]

Runs the same dataset and configuration through ``psqe-ray seeds`` (in-process) and through the
seed job on Ray, each in a fresh child process, and prints one JSON line per run plus a summary:
wall time, the driver's own peak RSS (``wait4``), the peak RSS any Ray worker reported (per stage,
from report.json), the machine's peak used memory above the idle baseline (sampled every 0.5 s:
driver + workers + object store), the ratio distributed / in-process and whether the accepted
seeds are identical.  ``--engine ray`` / ``local`` runs one side only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402
from seeds_real import PAIRS, ensure_import  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class MemorySampler:
    """Peak of the machine's used memory (bytes) while running, above the baseline at start."""

    def __init__(self, every: float = 0.5) -> None:
        self.every, self.base, self.peak = every, psutil.virtual_memory().used, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, psutil.virtual_memory().used - self.base)
            time.sleep(self.every)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def accepted(out: Path) -> list[tuple]:
    t = pq.read_table(out / "seeds.parquet").to_pydict()
    return [(a, b, s, src) for a, b, s, src, ok in zip(t["left_id"], t["right_id"], t["score"],
                                                       t["source"], t["accepted"]) if ok]


def run(engine: str, ds: str, out: Path, sets: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    extra = sum((["--set", s] for s in sets), [])
    if engine == "ray":
        cmd = [sys.executable, str(REPO / "jobs" / "seeds.py"), "-q", ds, str(out), *extra]
    else:
        cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "seeds", ds, str(out), *extra]
    with MemorySampler() as mem:
        m = run_measured(cmd)
    rep = json.loads((out / "report.json").read_text())
    workers = max((r.get("worker_peak_rss_bytes", 0) for r in rep.get("resources", {}).values()),
                  default=0)
    return {"engine": engine, "dataset": ds, "seconds": m["seconds"],
            "driver_peak_rss_mib": round(m["peak_rss_bytes"] / 2**20),
            "worker_peak_rss_mib": round(workers / 2**20) if workers else None,
            "machine_peak_used_mib": round(mem.peak / 2**20),
            "seeds": rep["seeds"]["count"], "precision": rep["seeds"]["precision"],
            "stages": [(s["name"], s["count"], s["seconds"]) for s in rep["stages"]],
            "resources": rep.get("resources")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pair", choices=sorted(PAIRS))
    src.add_argument("--synth", type=int, metavar="N", help="synthetic pair, N entities per side")
    p.add_argument("--engine", choices=["both", "ray", "local"], default="both")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    if args.pair:
        ds, name = ensure_import(args.pair, cache), args.pair
    else:
        name = f"synth-{args.synth}"
        ds = str(cache / name)
        if not (Path(ds) / "_MANIFEST.json").exists():
            run_measured([sys.executable, "-m", "psqe_ray.cli", "-q", "synth", ds,
                          "--entities", str(args.synth), "--seed", "0"])
    results = {}
    for engine in (["local", "ray"] if args.engine == "both" else [args.engine]):
        results[engine] = run(engine, ds, cache / "runs" / f"{name}-dist-{engine}", args.set)
        print(json.dumps(results[engine]), flush=True)
    if len(results) == 2:
        same = accepted(cache / "runs" / f"{name}-dist-local") == accepted(
            cache / "runs" / f"{name}-dist-ray")
        print(json.dumps({"summary": name, "ratio_ray_over_local": round(
            results["ray"]["seconds"] / results["local"]["seconds"], 2),
            "identical_seeds": same}), flush=True)


if __name__ == "__main__":
    main()
