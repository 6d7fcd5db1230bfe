"""Seed job: ``ray job submit --working-dir . -- python jobs/seeds.py DATASET_URL OUT_URL [...]``.

Same options and outputs as ``psqe-ray seeds`` (``OUT_URL/seeds.parquet``, ``report.json``), run
on the distributed path: on the cluster the job was submitted to, or on an embedded local Ray
when started directly (``python jobs/seeds.py ...``).  Committed stages under
``OUT_URL/stages/`` are reused when the same command runs again (resume after a failure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# the job's working directory is the project root: import psqe_ray from there when the cluster
# image does not have it installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psqe_ray.cli import add_seed_arguments, run_command, seeds_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/seeds.py", description=__doc__.split("\n")[0])
    add_seed_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = p.parse_args(argv)
    args.engine = "ray"

    def run(a: argparse.Namespace) -> int:
        report = seeds_main(a)
        print(json.dumps({"seeds": report["seeds"]["count"],
                          "precision": report["seeds"]["precision"],
                          "resumed_stages": report.get("resumed_stages", []),
                          "seconds_total": report["seconds_total"]}, sort_keys=True))
        return 0

    return run_command(run, args)


if __name__ == "__main__":
    sys.exit(main())
