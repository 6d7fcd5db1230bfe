"""The modality signal test (psqe_ray.core.signal) on the real pairs and on copies whose names
on one side are opaque ids (benchmarks/opaque_names.py): one JSON line per (pair, modality).

    python benchmarks/signal_real.py [--pair fr_en ...] [--cache /tmp/psqe-bench]

Pairs: fr_en, zh_en, openea (imported as benchmarks/import_real.py does) and openea-opaque,
fr_en-opaque (the right-hand names replaced by Q-numbers).  No gold link is read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seeds_real import ensure_import  # noqa: E402

from psqe_ray.config import PSQEConfig  # noqa: E402
from psqe_ray.core.psqe import SeedGenerator  # noqa: E402
from psqe_ray.io.dataset import Dataset  # noqa: E402
from psqe_ray.io.load import load_pair  # noqa: E402

PAIRS = ["fr_en", "zh_en", "openea", "openea-opaque", "fr_en-opaque"]


def dataset(pair: str, cache: Path) -> str:
    base, _, opaque = pair.partition("-")
    ds = ensure_import(base, cache)
    if not opaque:
        return ds
    out = cache / pair
    subprocess.run([sys.executable, str(Path(__file__).with_name("opaque_names.py")), ds,
                    str(out), "--side", "right"], check=True, stdout=subprocess.DEVNULL)
    return str(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", choices=PAIRS)
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()
    cache = Path(args.cache)
    for pair in args.pair or PAIRS:
        ds = dataset(pair, cache)
        gen = SeedGenerator(PSQEConfig())
        t = time.perf_counter()
        try:
            gen.prepare(load_pair(Dataset(ds)))
        except ValueError as exc:
            print(json.dumps({"pair": pair, "error": str(exc)[:300]}), flush=True)
            continue
        seconds = round(time.perf_counter() - t, 1)
        for m, test in gen.signal_.items():
            print(json.dumps({"pair": pair, "modality": m, **test, "used": m in gen.modalities_,
                              "prepare_seconds": seconds}), flush=True)
        for m, why in gen.skipped_.items():
            if m not in gen.signal_:
                print(json.dumps({"pair": pair, "modality": m, "skipped": why}), flush=True)


if __name__ == "__main__":
    main()
