"""Seed quality and speed on the real pairs: UVP (names), Type II and PSQE, with/without names.

    python benchmarks/seeds_real.py [--pair fr_en --pair zh_en --pair openea]
                                    [--method psqe --method uvp ...] [--set KEY=VALUE ...]

Imports each pair once into a cache folder (default /tmp/psqe-bench), runs `psqe-ray seeds` in a
child process per (pair, method, modalities), and prints one JSON line per run: seed count,
precision, recall, edge coverage, degree gap, seconds, peak RSS.  Without names, UVP has no
pivot on these pairs (no images), so it is skipped there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402
from import_real import PAIRS  # noqa: E402

WITH_NAMES = "name,relation,attribute,image"
WITHOUT_NAMES = "relation,attribute,image"


def modality_sets(names: str) -> list[str]:
    """``--modalities`` lists for ``--names with|without|both``."""
    return {"with": [WITH_NAMES], "without": [WITHOUT_NAMES],
            "both": [WITH_NAMES, WITHOUT_NAMES]}[names]


def ensure_import(pair: str, cache: Path) -> str:
    fmt, src, names = PAIRS[pair]
    url = cache / pair
    if not (url / "_MANIFEST.json").exists():
        cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "import", "--format", fmt, str(src),
               str(url)] + (["--names", str(names)] if names else [])
        run_measured(cmd)
    return str(url)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", choices=sorted(PAIRS))
    p.add_argument("--method", action="append", choices=["psqe", "uvp", "multimodal-greedy"])
    p.add_argument("--names", choices=["with", "without", "both"], default="both")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    mods = modality_sets(args.names)
    for pair in args.pair or ["fr_en", "zh_en", "openea"]:
        ds = ensure_import(pair, cache)
        for modalities in mods:
            for method in args.method or ["uvp", "multimodal-greedy", "psqe"]:
                if method == "uvp" and "name" not in modalities:
                    continue
                out = cache / "runs" / f"{pair}-{method}-{'names' if 'name' in modalities else 'nonames'}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "seeds", ds, str(out),
                       "--method", method, "--modalities", modalities]
                for s in args.set:
                    cmd += ["--set", s]
                try:
                    m = run_measured(cmd)
                except SystemExit as exc:  # e.g. no modality with a cross-graph signal
                    print(json.dumps({"pair": pair, "method": method,
                                      "names": "name" in modalities,
                                      "error": str(exc).strip().splitlines()[-1]}), flush=True)
                    continue
                rep = json.loads((out / "report.json").read_text())
                cov = rep["coverage"]
                print(json.dumps({
                    "pair": pair, "method": method, "names": "name" in rep["modalities"],
                    "modalities": rep["modalities"], "seeds": rep["seeds"]["count"],
                    "precision": rep["seeds"]["precision"], "recall": rep["seeds"]["recall"],
                    "judged_precision": rep["seeds"].get("judged_precision"),
                    "edge_coverage": cov["edge_coverage"]["mean"],
                    "degree_gap": cov["degree_gap"]["mean"],
                    "stages": [(s["name"], s["count"], s["precision"], s["seconds"])
                               for s in rep["stages"]],
                    "seconds": m["seconds"], "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20),
                }), flush=True)


if __name__ == "__main__":
    main()
