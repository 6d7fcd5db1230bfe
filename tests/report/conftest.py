"""One small real pipeline run (in-process) whose report.json / report.html the report tests
read: a synthetic pair with gold links, every PSQE stage scoring candidates."""

from __future__ import annotations

from pathlib import Path

import pytest

from psqe_ray.config import load_config
from psqe_ray.runners import run_pipeline
from psqe_ray.testing.synth import SynthConfig, synthesize

# small and fast; Stage III's thresholds low enough that the expansion scores candidates
SETS = ["stage2.epochs=10", "stage1.budget=60", "stage3.threshold_start=0.5",
        "stage3.threshold_end=0.6", "align.dim=16", "align.epochs=6", "align.round_epochs=2",
        "align.batch_size=128", "align.topk=5"]


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> tuple[str, Path, dict]:
    """(dataset URL, output folder, report) of ``psqe-ray run`` on a 220-entity pair."""
    root = tmp_path_factory.mktemp("report-run")
    data = str(root / "pair")
    synthesize(data, SynthConfig(entities=220, seed=7))
    out = root / "out"
    report = run_pipeline(data, str(out), load_config(None, SETS))
    return data, out, report
