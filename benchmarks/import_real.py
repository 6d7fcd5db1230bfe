"""Time and peak memory of `psqe-ray import` on the real benchmark pairs in ../shared/data.

    python benchmarks/import_real.py [--pair fr_en|zh_en|openea]

Prints one JSON line per pair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PAIRS = {
    "fr_en": ("dbp15k", DATA / "DBP15K/fr_en", DATA / "DBP15K/translated_ent_name/dbp_fr_en.json"),
    "zh_en": ("dbp15k", DATA / "DBP15K/zh_en", DATA / "DBP15K/translated_ent_name/dbp_zh_en.json"),
    "openea": ("openea", DATA / "OpenEA15K/OEA_EN_FR_15K_V1", None),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", choices=sorted(PAIRS), action="append")
    args = p.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    for pair in args.pair or ["fr_en"]:
        fmt, src, names = PAIRS[pair]
        tmp = tempfile.mkdtemp(prefix="psqe-import-")
        try:
            cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "import", "--format", fmt,
                   str(src), f"{tmp}/ds"] + (["--names", str(names)] if names else [])
            m = run_measured(cmd)
            print(json.dumps({"benchmark": "import", "pair": pair, "seconds": m["seconds"],
                              "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20, 1),
                              "rows": json.loads(m["stdout"])["rows"]}))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
