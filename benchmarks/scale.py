"""The pipeline job at scale: ``jobs/run.py`` on synthetic pairs, with the name-only baseline.

    python benchmarks/scale.py --entities 25000 --entities 100000 [--set KEY=VALUE ...]

For each size N (entities per side) it synthesises a pair once (``--seed 0``, cached), runs
``jobs/run.py`` (PSQE seeds on the distributed path, the default aligner on Ray Train, the
report) in a fresh child process on an embedded local Ray, and prints one JSON line: wall time,
the driver's peak RSS (its own ``getrusage``, from report.json), the machine's peak used memory
above the idle baseline (sampled every 0.5 s: driver, workers, object store), seconds per step
and per seed stage, seed count and precision, Hits@1/10/MRR, the search plans used, and the
name-only baseline: nearest neighbour of each gold left entity's hashed character n-grams among
every right entity (the same search layer), Hits@1.  The baseline is measured after the job, in
this process, and is not part of the job's time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402
from distributed import MemorySampler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def name_baseline(ds_url: str) -> dict:
    """Hits@1 of hashed-n-gram names alone (nearest neighbour, l2r, all right entities)."""
    from psqe_ray.config import FeatureConfig
    from psqe_ray.core.alignment_quality import gold_ranks
    from psqe_ray.core.features import name_features
    from psqe_ray.core.search import Searcher
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair

    t = time.perf_counter()
    pair = load_pair(Dataset(ds_url))
    fc = FeatureConfig()
    xl, _ = name_features(pair.left.names, fc.name_dim, fc.name_ngram_min, fc.name_ngram_max)
    xr, _ = name_features(pair.right.names, fc.name_dim, fc.name_ngram_min, fc.name_ngram_max)
    gl, gr = pair.gold
    rank = gold_ranks(xl, xr, gl, gr, searcher=Searcher(seed=42))
    return {"hits@1": round(float(np.mean(rank <= 1)), 4),
            "hits@10": round(float(np.mean(rank <= 10)), 4),
            "seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, action="append", required=True)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cache", default="/tmp/psqe-bench")
    p.add_argument("--keep", action="store_true", help="keep the run's output folder")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for n in args.entities:
        ds = cache / f"synth-{n}"
        if not (ds / "_MANIFEST.json").exists():
            run_measured([sys.executable, "-m", "psqe_ray.cli", "-q", "synth", str(ds),
                          "--entities", str(n), "--seed", "0"])
        out = cache / "runs" / f"scale-{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, str(REPO / "jobs" / "run.py"), "-q", str(ds), str(out),
               *sum((["--set", s] for s in args.set), [])]
        with MemorySampler() as mem:
            m = run_measured(cmd)
        rep = json.loads((out / "report.json").read_text())
        seeds, align = rep["seeds"], rep["align"]
        row = {
            "entities": n, "seconds": m["seconds"], "steps": rep["seconds"],
            "driver_peak_rss_mib": round(max(seeds.get("peak_rss_bytes", 0),
                                             align.get("driver_peak_rss_bytes", 0)) / 2**20),
            "machine_peak_used_mib": round(mem.peak / 2**20),
            "stages": [(s["name"], s["count"], s["seconds"]) for s in seeds["stages"]],
            "seeds": seeds["seeds"]["count"], "precision": seeds["seeds"]["precision"],
            "train_seconds": align.get("train_seconds"),
            "search_seconds": align.get("search_seconds"),
            "eval_seconds": align.get("eval_seconds"),
            "hits@1": align["hits@1"], "hits@10": align["hits@10"], "mrr": align["mrr"],
            "ranking": align.get("ranking"),
            "search": {k: v.get("search") for k, v in seeds.get("resources", {}).items()
                       if v.get("search")},
        }
        row["name_only"] = name_baseline(str(ds))
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
