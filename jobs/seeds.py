"""Seed job: ``ray job submit --working-dir . -- python jobs/seeds.py DATASET_URL OUT_URL [...]``.

Same options and outputs as ``psqe-ray seeds`` (``OUT_URL/seeds.parquet``, ``report.json``), run
on the distributed path: on the cluster the job was submitted to, or on an embedded local Ray
when started directly (``python jobs/seeds.py ...``).  Committed stages under
``OUT_URL/stages/`` are reused when the same command runs again (resume after a failure).
"""

from __future__ import annotations

import sys
from pathlib import Path

# the job's working directory is the project root: import psqe_ray from there when the cluster
# image does not have it installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psqe_ray.cli import add_seed_arguments, job_main, seeds_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, prog="jobs/seeds.py", doc=__doc__, add_arguments=add_seed_arguments,
                    main=seeds_main,
                    summary=lambda r: {"seeds": r["seeds"]["count"],
                                       "precision": r["seeds"]["precision"],
                                       "resumed_stages": r.get("resumed_stages", []),
                                       "seconds_total": r["seconds_total"]})


if __name__ == "__main__":
    sys.exit(main())
