"""Pipeline job: ``ray job submit --working-dir . -- python jobs/run.py DATASET_URL OUT_URL [...]``.

Same options and outputs as ``psqe-ray run``: encode (when configured) -> PSQE seeds on the
distributed path (stages under ``OUT_URL/seeds/stages/``, resumed on a rerun) -> the aligner on
Ray Train -> ``OUT_URL/report.json`` and ``OUT_URL/report.html``.  Started directly
(``python jobs/run.py ...``) it runs on an embedded local Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the job's working directory is the project root: import psqe_ray from there when the cluster
# image does not have it installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psqe_ray.cli import add_run_arguments, job_main, run_main, run_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, prog="jobs/run.py", doc=__doc__, add_arguments=add_run_arguments,
                    main=run_main, summary=run_summary)


if __name__ == "__main__":
    sys.exit(main())
