"""Align job: ``ray job submit --working-dir . -- python jobs/align.py DATASET_URL SEEDS_URL
OUT_URL --recipe pcmea [...]``.

Same options and outputs as ``psqe-ray align`` (``OUT_URL/alignment.parquet``,
``metrics.json``), with the training on Ray Train (``distributed.train_workers`` workers).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psqe_ray.cli import add_align_arguments, align_main, align_summary, job_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return job_main(argv, prog="jobs/align.py", doc=__doc__, add_arguments=add_align_arguments,
                    main=align_main, summary=align_summary)


if __name__ == "__main__":
    sys.exit(main())
