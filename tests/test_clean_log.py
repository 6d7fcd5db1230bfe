"""A healthy run, as a user starts it: progress lines for every stage and no error-level line
(issue 15).  ``psqe-ray run`` in its own process on a small pair, the name encoder configured,
so an embedded Ray is started (the encoder's Ray Data pool) the way the README's commands start
it; stdout and stderr are read whole, Ray's C++ lines included."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from psqe_ray.testing.synth import SynthConfig, synthesize

SETS = ["stage2.epochs=4", "stage1.budget=60", "align.dim=16", "align.epochs=4",
        "align.round_epochs=2", "align.batch_size=128", "align.topk=5"]
# what an error- or warning-level line holds: Python's logging and warnings, Ray's logs
# (" E ": its C++ lines, "[time E pid tid] file.cc"), a traceback
BAD = re.compile(r" E |ERROR|Error|WARNING|Warning|Traceback")


def test_a_healthy_run_shows_progress_and_no_error_line(tmp_path, tiny_bert_dir):
    pair, out = str(tmp_path / "pair"), str(tmp_path / "out")
    synthesize(pair, SynthConfig(entities=200, seed=3))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PSQE_RAY_NUM_CPUS"] = "2"
    proc = subprocess.run(
        [sys.executable, "-m", "psqe_ray.cli", "run", pair, out,
         "--set", f"encode.name_model={tiny_bert_dir}", *sum((["--set", s] for s in SETS), [])],
        capture_output=True, text=True, env=env, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert [line for line in text.splitlines() if BAD.search(line)] == [], text[-3000:]
    progress = [line.split("psqe_ray.progress: ", 1)[1] for line in text.splitlines()
                if "psqe_ray.progress: " in line]
    for stage in (r"encode name texts: [\d,]+ of [\d,]+ rows \(100%\), .* rows/s",
                  r"stage2 training: epoch 4/4, loss ",
                  r"stage2-global top-k both ways: 1 of 1 blocks \(100%\)",
                  r"align pcmea training: epoch \d+/\d+, loss ",
                  r"align search: 1 of 1 blocks \(100%\)"):
        assert any(re.match(stage, line) for line in progress), (stage, progress)
