"""The aligner's checkpoint: a fit killed at any point and resumed takes the very same steps."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from psqe_ray.io.checkpoint import AlignCheckpoint
from psqe_ray.align.trainer import Aligner
from psqe_ray.config import AlignConfig, load_config
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.train import joint_graph, model_inputs
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.load import load_pair
from psqe_ray.runners import run_align
from psqe_ray.testing.kill import run_until
from psqe_ray.testing.synth import SynthConfig, synthesize

CFG = AlignConfig(dim=16, epochs=6, round_epochs=3, rounds=2, batch_size=64)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("resume") / "pair")
    synthesize(url, SynthConfig(entities=200, seed=4, name_noise=0.3))
    pair = load_pair(Dataset(url))
    mods, _ = SeedGenerator(load_config(None, modalities="name,relation")).prepare(pair)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    take = np.arange(0, len(pair.gold[0]), 3)
    return model_inputs(mods), graph, pair.left.n, (pair.gold[0][take], pair.gold[1][take])


class Killed(Exception):
    pass


def _kill_at(epoch: int):
    def on_epoch(done: int, _loss: float) -> None:
        if done == epoch:
            raise Killed
    return on_epoch


@pytest.mark.parametrize("recipe", ["pcmea", "meaformer"])
# in the first training, in round 1, in round 2, in the (default) match round
@pytest.mark.parametrize("kill_at", [3, 8, 11, 14])
def test_a_resumed_fit_equals_the_undisturbed_one(inputs, tmp_path, recipe, kill_at):
    feats, graph, n_left, seeds = inputs
    cfg = replace(CFG, recipe=recipe)
    ref = Aligner(cfg, random_state=3).fit(feats, graph, n_left, *seeds)
    ckpt = AlignCheckpoint(str(tmp_path / "_train" / "aligner.ckpt"), "job-1", every=2)
    with pytest.raises(Killed):
        Aligner(cfg, random_state=3).fit(feats, graph, n_left, *seeds, checkpoint=ckpt,
                                         on_epoch=_kill_at(kill_at))
    state = ckpt.load()
    # saved every 2 epochs (the kill comes before epoch kill_at's save) and after each check
    assert state is not None and len(state["losses"]) == (kill_at - 1) // 2 * 2
    seen = []
    got = Aligner(cfg, random_state=3).fit(feats, graph, n_left, *seeds, checkpoint=ckpt,
                                           on_epoch=lambda d, _l: seen.append(d))
    assert seen[0] == len(state["losses"]) + 1  # it resumed, not restarted
    assert np.array_equal(got.embeddings_[0], ref.embeddings_[0])
    assert np.array_equal(got.embeddings_[1], ref.embeddings_[1])
    assert got.losses_ == ref.losses_ and got.added_ == ref.added_
    assert got.matched_ == ref.matched_ and len(ref.matched_) == 1
    assert got.steps_ == ref.steps_
    assert all(np.array_equal(a, b) for a, b in zip(got.pairs_, ref.pairs_))


def test_a_checkpoint_of_another_job_is_not_resumed(inputs, tmp_path):
    feats, graph, n_left, seeds = inputs
    url = str(tmp_path / "aligner.ckpt")
    with pytest.raises(Killed):
        Aligner(CFG, random_state=3).fit(feats, graph, n_left, *seeds,
                                         checkpoint=AlignCheckpoint(url, "job-1", every=1),
                                         on_epoch=_kill_at(4))
    other = AlignCheckpoint(url, "job-2", every=1)
    assert other.load() is None
    seen = []
    Aligner(CFG, random_state=3).fit(feats, graph, n_left, *seeds, checkpoint=other,
                                     on_epoch=lambda d, _l: seen.append(d))
    assert seen[0] == 1
    cut = tmp_path / "aligner.ckpt.tmp-0000"  # a save a kill cut short
    cut.write_bytes(b"half")
    other.clear()
    assert not os.path.exists(url) and not cut.exists()


SETS = ["align.dim=16", "align.epochs=40", "align.round_epochs=10", "align.batch_size=64",
        "align.recipe=pcmea", "align.checkpoint_every=2", "stage1.budget=60"]


def test_align_resumes_after_sigkill(tmp_path, caplog):
    """`psqe-ray align` killed (SIGKILL) once it has checkpointed; the rerun resumes and
    commits the alignment and metrics of an undisturbed run."""
    from psqe_ray.cli import main

    pair, seeds = str(tmp_path / "pair"), str(tmp_path / "seeds")
    synthesize(pair, SynthConfig(entities=200, seed=6))
    assert main(["-q", "seeds", pair, seeds, "--method", "uvp", "--set", "stage1.budget=60"]) == 0
    ref = run_align(pair, seeds, str(tmp_path / "ref"), load_config(None, SETS))
    out = tmp_path / "out"
    run_until([sys.executable, "-m", "psqe_ray.cli", "align", pair, seeds, str(out),
               *sum((["--set", s] for s in SETS), [])], out / "_train" / "aligner.ckpt",
              what="the aligner's first checkpoint")
    assert not (out / "_MANIFEST.json").exists() and not (out / "alignment.parquet").exists()
    with caplog.at_level("INFO", logger="psqe_ray.align.trainer"):
        got = run_align(pair, seeds, str(out), load_config(None, SETS))
    assert "resumed from" in caplog.text
    keys = ("hits@1", "hits@10", "mrr", "pairs_added", "train_steps", "matching")
    assert {k: got[k] for k in keys if k != "matching"} == {k: ref[k] for k in keys
                                                            if k != "matching"}
    assert {k: v for k, v in got["matching"].items() if k != "seconds"} == \
        {k: v for k, v in ref["matching"].items() if k != "seconds"}
    assert pq.read_table(out / "alignment.parquet").equals(
        pq.read_table(tmp_path / "ref" / "alignment.parquet"))
    assert not (out / "_train").exists()  # removed once the alignment is committed
    assert json.loads((out / "metrics.json").read_text())["fingerprint"] == ref["fingerprint"]
