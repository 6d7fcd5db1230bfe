"""A training worker lost mid-training (its process killed with SIGKILL, as when its node goes):
Ray Train restarts the worker group (``distributed.max_failures``), the new workers resume from
the latest checkpoint, and the job ends with the undisturbed result."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from psqe_ray.config import load_config
from psqe_ray.runners import engine_for, run_align, run_seeds
from psqe_ray.testing.synth import SynthConfig, synthesize


def _train_workers() -> list[psutil.Process]:
    """This session's live Ray Train worker processes."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def _run_and_kill(job, ready, timeout: float = 300.0):
    """Run ``job()`` in a thread; once ``ready()`` holds, SIGKILL the training worker.  Returns
    the job's result (raises what it raised)."""
    out: dict = {}

    def target():
        try:
            out["result"] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    killed = 0
    while not killed:
        assert t.is_alive(), f"the job ended before a worker was lost: {out}"
        assert time.monotonic() < deadline, "no checkpoint to lose a worker after"
        if ready():
            for p in _train_workers():
                os.kill(p.pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.05)
    t.join(timeout)
    assert not t.is_alive(), "the job did not finish after the worker was lost"
    if "error" in out:
        raise out["error"]
    return out["result"]


SEED_SETS = ["stage2.epochs=12", "stage1.budget=100", "distributed.checkpoint_every=3",
             "stage3.threshold_start=0.5", "stage3.threshold_end=0.6"]


def test_stage2_survives_a_lost_training_worker(tmp_path, ray_local, ray_timeout):
    pair = str(tmp_path / "pair")
    synthesize(pair, SynthConfig(entities=300, seed=8))
    cfg = load_config(None, SEED_SETS)
    run_seeds(pair, str(tmp_path / "ref"), cfg)
    out = tmp_path / "out"
    report = _run_and_kill(lambda: run_seeds(pair, str(out), cfg, engine=engine_for("ray")),
                           lambda: any((out / "stages" / "_train").rglob("state.pkl")))
    assert report["resumed_stages"] == []  # the same run went on: no rerun
    assert pq.read_table(out / "seeds.parquet").equals(pq.read_table(tmp_path / "ref" /
                                                                     "seeds.parquet"))


ALIGN_SETS = ["align.dim=16", "align.epochs=12", "align.round_epochs=3", "align.batch_size=64",
              "align.recipe=pcmea", "align.checkpoint_every=2", "stage1.budget=60"]


def test_the_aligner_survives_a_lost_training_worker(tmp_path, ray_local, ray_timeout):
    from psqe_ray.cli import main

    pair, seeds = str(tmp_path / "pair"), str(tmp_path / "seeds")
    synthesize(pair, SynthConfig(entities=200, seed=6))
    assert main(["-q", "seeds", pair, seeds, "--method", "uvp", "--set", "stage1.budget=60"]) == 0
    cfg = load_config(None, ALIGN_SETS)
    ref = run_align(pair, seeds, str(tmp_path / "ref"), cfg)
    out = tmp_path / "out"
    got = _run_and_kill(lambda: run_align(pair, seeds, str(out), cfg, engine=engine_for("ray")),
                        lambda: (out / "_train" / "aligner.ckpt").exists())
    assert got["pairs_added"] == ref["pairs_added"] and got["variants"] == ref["variants"]
    a, b = (pq.read_table(Path(d) / "alignment.parquet") for d in (tmp_path / "ref", out))
    assert a.column("right_id").equals(b.column("right_id"))
    assert a.column("score").equals(b.column("score"))
    assert not (out / "_train").exists()
