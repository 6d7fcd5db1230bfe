"""Same dataset, configuration and seed -> the same bytes, whatever the machine's load, the CPUs
Ray is given and the engine: the pipeline run in-process (one OpenMP thread), as a Ray job on
1 CPU and as a Ray job on 2 CPUs with a busy process beside it.  The seeds, the alignment and
the one-to-one matches are compared byte for byte, and so are the reports' figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psqe_ray.testing.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[2]
SETS = ["stage2.epochs=12", "stage1.budget=80", "distributed.checkpoint_every=4",
        "align.dim=16", "align.epochs=5", "align.round_epochs=2", "align.batch_size=64"]
OUTPUTS = ("seeds/seeds.parquet", "align/alignment.parquet", "align/matches.parquet")


def _run(cmd: list[str], data: str, out: Path, sets: list[str], **env: str) -> None:
    argv = [*cmd, data, str(out)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _content(path: Path) -> bytes:
    """A Parquet file's schema and every column's bytes, its metadata left out: the run's
    fingerprint names the engine (an in-process output is not a Ray job's output)."""
    table = pq.read_table(path).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _figures(out: Path) -> dict:
    """The report's figures (timings, memory and node accounting left out)."""
    report = json.loads((out / "report.json").read_text())
    align = report["align"]
    return {"seeds": {k: report["seeds"]["seeds"][k] for k in ("count", "precision", "recall")},
            "align": {k: align[k] for k in ("hits@1", "hits@10", "mrr", "pairs_added",
                                            "train_steps", "seeds_used")},
            "matching": {k: v for k, v in align["matching"].items() if k != "seconds"},
            # report.html's figures: score histograms per stage, PSQE vs UVP, sample pairs
            "scores": [s.get("scores") for s in report["seeds"]["stages"]],
            "uvp_comparison": report["seeds"].get("uvp_comparison"),
            "samples": align.get("samples")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("det") / "pair")
    synthesize(url, SynthConfig(entities=300, seed=11))
    return url


def _three_runs(pair: str, root: Path, sets: list[str]) -> list[Path]:
    """In-process with 1 OpenMP thread; on Ray with 1 CPU; on Ray with 2 CPUs beside a busy
    process."""
    outs = [root / "inprocess", root / "ray-1cpu", root / "ray-2cpu-busy"]
    _run([sys.executable, "-m", "psqe_ray.cli", "-q", "run"], pair, outs[0], sets,
         OMP_NUM_THREADS="1")
    _run([sys.executable, "jobs/run.py"], pair, outs[1], sets, PSQE_RAY_NUM_CPUS="1")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        _run([sys.executable, "jobs/run.py"], pair, outs[2], sets, PSQE_RAY_NUM_CPUS="2")
    finally:
        busy.kill()
        busy.wait()
    return outs


def test_same_bytes_under_any_load_cpu_count_and_engine(pair, tmp_path):
    outs = _three_runs(pair, tmp_path, SETS)
    for name in OUTPUTS:
        # the two Ray runs: the same files; in-process: the same content (other fingerprint)
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
        assert _content(outs[0] / name) == _content(outs[1] / name), name
    figures = [_figures(o) for o in outs]
    assert figures[0]["uvp_comparison"]["uvp"] and figures[0]["samples"]["best"]
    assert sum(s is not None for s in figures[0]["scores"]) >= 4
    assert figures[1] == figures[0] and figures[2] == figures[0]
    repro = json.loads((outs[2] / "report.json").read_text())["reproducibility"]
    assert repro["same_result_anywhere"] is True
    assert repro["result_settings"]["threads"] == 2
    assert "PSQE_RAY_NUM_CPUS" in repro["no_effect"]


def test_the_report_says_when_the_result_depends_on_the_machine(pair, tmp_path):
    """``threads=0`` trains with the node's cores: the report must not promise equality."""
    out = tmp_path / "out"
    _run([sys.executable, "-m", "psqe_ray.cli", "-q", "run"], pair, out,
         ["stage2.epochs=2", "stage1.budget=40", "align.dim=8", "align.epochs=1",
          "align.round_epochs=1", "align.rounds=0", "threads=0"])
    repro = json.loads((out / "report.json").read_text())["reproducibility"]
    assert repro["same_result_anywhere"] is False and "threads=0" in repro["note"]
