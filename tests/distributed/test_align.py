"""The aligner on Ray Train and the pipeline job on a real local Ray cluster."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from psqe_ray.align.trainer import Aligner
from psqe_ray.config import load_config
from psqe_ray.runners import engine_for, run_align
from psqe_ray.testing.synth import FeatureSpec, SynthConfig, synthesize

REPO = Path(__file__).resolve().parents[2]
SETS = ["align.dim=16", "align.epochs=5", "align.round_epochs=2", "align.batch_size=64",
        "align.recipe=meaformer", "stage2.epochs=8", "stage1.budget=60"]


@pytest.fixture(scope="module")
def pair_and_seeds(tmp_path_factory) -> tuple[str, str]:
    from psqe_ray.cli import main

    root = tmp_path_factory.mktemp("dalign")
    # a name feature table besides the image one: a text model's vectors, centred per graph
    # (features.centre_text) from every block's sums on Ray
    synthesize(str(root / "pair"), SynthConfig(entities=200, seed=6, features=(
        FeatureSpec(), FeatureSpec("name", 16, 0.6, 0.1))))
    assert main(["-q", "seeds", str(root / "pair"), str(root / "seeds"), "--method", "uvp",
                 "--set", "stage1.budget=60"]) == 0
    return str(root / "pair"), str(root / "seeds")


@pytest.mark.parametrize("extra", [[], [
    # the approximate search and ranking on row blocks (4 per side): shard and block tasks
    "search.exact_below=50", "distributed.block_rows=64", "distributed.chunk_rows=32"]],
    ids=["exact", "approximate-blocks"])
def test_ray_train_aligner_equals_inprocess(pair_and_seeds, tmp_path, ray_local, ray_timeout,
                                            extra, caplog):
    pair, seeds = pair_and_seeds
    cfg = load_config(None, SETS + extra)
    local = run_align(pair, seeds, str(tmp_path / "local"), cfg)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="psqe_ray"):
        on_ray = run_align(pair, seeds, str(tmp_path / "ray"), cfg, engine=engine_for("ray"))
    # the Ray Train worker's epochs reach the driver's log, up to the last
    total = Aligner(cfg.align).epochs()
    lines = [r.getMessage() for r in caplog.records if r.name == "psqe_ray.progress"]
    assert any(m.startswith(f"align {cfg.align.recipe} training: epoch {total}/{total}, loss")
               for m in lines), \
        lines
    assert on_ray["engine"] == "ray" and on_ray["train_workers"] == 1
    assert on_ray["pairs_added"] == local["pairs_added"]
    assert on_ray["match_round_pairs"] == local["match_round_pairs"]
    assert on_ray["variants"] == local["variants"]
    a = pq.read_table(tmp_path / "local" / "alignment.parquet")
    b = pq.read_table(tmp_path / "ray" / "alignment.parquet")
    assert a.column("right_id").equals(b.column("right_id"))
    assert a.column("score").equals(b.column("score"))
    assert pq.read_table(tmp_path / "local" / "matches.parquet").equals(
        pq.read_table(tmp_path / "ray" / "matches.parquet"))
    assert on_ray["matching"] == {**local["matching"], "seconds": on_ray["matching"]["seconds"]}
    assert not (tmp_path / "ray" / "_train").exists()  # the hand-over checkpoint is removed
    if extra:
        assert on_ray["ranking"].startswith("approximate")
        kinds = {k for e in on_ray["nodes"].values() for k in e["tasks"]}
        # subsets and the gold pairs' scores made by tasks: no gold row reaches the driver
        assert {"features-raw", "gather-rows", "pair-scores"} <= kinds
        assert on_ray["feature_sources"]["name"] == "features/name, centred per graph"
        assert "take-rows" not in kinds


def test_pipeline_job_on_ray(pair_and_seeds, tmp_path, ray_local, ray_timeout, capsys,
                             monkeypatch):
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import run as job
    finally:
        sys.path.pop(0)
    pair, _ = pair_and_seeds
    monkeypatch.chdir(tmp_path)
    out = Path("job")  # relative, as in the README: the training worker runs elsewhere
    # UVP seeds keep the job short: the PSQE stages on Ray have their own tests
    argv = [pair, str(out), "-q", "--method", "uvp"] + [x for s in SETS for x in ("--set", s)]
    assert job.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["recipe"] == "meaformer" and summary["hits@1"] is not None
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"]["engine"] == "ray" and report["align"]["engine"] == "ray"
    assert report["seeds"]["method"] == "uvp"
    assert (out / "seeds" / "stages").is_dir()  # the seed stages are committed for a resume
    assert "<svg" in (out / "report.html").read_text()
