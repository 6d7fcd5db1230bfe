"""Time and peak memory of `psqe-ray synth` at a given size.

    python benchmarks/synth_scale.py --entities 1000000 [--out DIR]

Prints one JSON line: entities per side, seconds, peak RSS, rows written, bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="destination (default: a temporary folder, removed after)")
    args = p.parse_args()
    tmp = None if args.out else tempfile.mkdtemp(prefix="psqe-synth-")
    out = args.out or os.path.join(tmp, "pair")
    try:
        m = run_measured([sys.executable, "-m", "psqe_ray.cli", "-q", "synth", out,
                          "--entities", str(args.entities), "--seed", str(args.seed)])
        rows = json.loads(m["stdout"])["rows"]
        size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
        print(json.dumps({"benchmark": "synth", "entities_per_side": args.entities,
                          "seconds": m["seconds"], "peak_rss_bytes": m["peak_rss_bytes"],
                          "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20, 1),
                          "triples": rows["triples"], "gold": rows["gold"]["all"],
                          "images": rows.get("images"), "bytes_on_disk": size}))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
