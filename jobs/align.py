"""Align job: ``ray job submit --working-dir . -- python jobs/align.py DATASET_URL SEEDS_URL
OUT_URL --recipe meaformer [...]``.

Same options and outputs as ``psqe-ray align`` (``OUT_URL/alignment.parquet``,
``metrics.json``), with the training on Ray Train (``distributed.train_workers`` workers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psqe_ray.cli import add_align_arguments, align_main, align_summary, run_command  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/align.py", description=__doc__.split("\n")[0])
    add_align_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = p.parse_args(argv)
    args.engine = "ray"

    def run(a: argparse.Namespace) -> int:
        print(json.dumps(align_summary(align_main(a)), sort_keys=True))
        return 0

    return run_command(run, args)


if __name__ == "__main__":
    sys.exit(main())
