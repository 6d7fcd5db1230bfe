"""The in-process seed path end to end on synthetic pairs: CLI, outputs, report, determinism."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from psqe_ray.cli import main
from psqe_ray.config import load_config
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.load import load_pair
from psqe_ray.testing.synth import FeatureSpec, SynthConfig, synthesize

FAST = ["stage2.epochs=15", "stage1.budget=150"]


@pytest.fixture(scope="module")
def pair_url(tmp_path_factory):
    url = str(tmp_path_factory.mktemp("synth") / "pair")
    synthesize(url, SynthConfig(entities=800, seed=3, image_files=0.0, name_noise=0.1,
                                features=(FeatureSpec("image", 32, 0.5, 0.3),)))
    return url


def _run(capsys, pair_url, out, *extra) -> dict:
    args = ["-q", "seeds", pair_url, str(out)]
    for s in FAST:
        args += ["--set", s]
    assert main(args + list(extra)) == 0
    capsys.readouterr()
    return json.loads((out / "report.json").read_text())


def test_psqe_cli_writes_seeds_and_report(tmp_path, capsys, pair_url):
    rep = _run(capsys, pair_url, tmp_path / "psqe")
    for key in ("method", "modalities", "seeds", "coverage", "stages", "seconds_total",
                "peak_rss_bytes"):
        assert key in rep
    assert rep["method"] == "psqe" and rep["modalities"] == ["attribute", "image", "name", "relation"]
    names = [s["name"] for s in rep["stages"]]
    assert names == ["features", "stage1-cluster", "stage2-global", "stage2-mic",
                     "stage3-expansion", "stage3-recheck"]
    assert all({"name", "count", "precision", "seconds"} <= set(s) for s in rep["stages"])
    table = pq.read_table(tmp_path / "psqe" / "seeds.parquet")
    acc = table.filter(table.column("accepted"))
    assert acc.num_rows == rep["seeds"]["count"] == rep["stages"][-1]["count"]
    left = acc.column("left_id").to_numpy()
    right = acc.column("right_id").to_numpy()
    assert len(set(left)) == len(left) and len(set(right)) == len(right)  # one-to-one
    rej = table.filter(np.logical_not(table.column("accepted").to_numpy()))
    assert all(r.startswith("mic:") for r in rej.column("reason").to_pylist())
    # quality is computed after the fact from gold: check it against the table
    gold = Dataset(pair_url).table("gold")
    gset = set(zip(gold.column("left_id").to_pylist(), gold.column("right_id").to_pylist()))
    correct = sum((l, r) in gset for l, r in zip(left.tolist(), right.tolist()))
    assert rep["seeds"]["precision"] == pytest.approx(correct / len(left))
    assert rep["seeds"]["recall"] == pytest.approx(correct / len(gset))
    assert 0 < rep["coverage"]["edge_coverage"]["mean"] <= 1


def test_psqe_beats_chance_and_uvp_runs(tmp_path, capsys, pair_url):
    psqe = _run(capsys, pair_url, tmp_path / "psqe")
    uvp = _run(capsys, pair_url, tmp_path / "uvp", "--method", "uvp")
    greedy = _run(capsys, pair_url, tmp_path / "mm", "--method", "multimodal-greedy")
    assert uvp["pivot"] == "image" and uvp["seeds"]["count"] == 150
    assert greedy["seeds"]["count"] == 150
    # chance precision on 800 x 800 entities is ~1/800
    for rep in (psqe, uvp, greedy):
        assert rep["seeds"]["precision"] > 0.3


def test_deterministic_for_a_seed(pair_url):
    pair = load_pair(Dataset(pair_url))
    cfg = load_config(None, FAST)
    a = SeedGenerator(cfg).fit(pair).seeds_
    b = SeedGenerator(cfg).fit(pair).seeds_
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = SeedGenerator(load_config(None, FAST + ["seed=7"])).fit(pair).seeds_
    assert not (len(c[0]) == len(a[0]) and np.array_equal(c[0], a[0]) and np.array_equal(c[1], a[1]))


def test_gold_is_never_read_by_the_method(pair_url):
    pair = load_pair(Dataset(pair_url))
    with_gold = SeedGenerator(load_config(None, FAST)).fit(pair).seeds_
    pair.gold = None
    without = SeedGenerator(load_config(None, FAST)).fit(pair).seeds_
    np.testing.assert_array_equal(with_gold[0], without[0])
    np.testing.assert_array_equal(with_gold[1], without[1])


def test_modalities_and_config_errors(tmp_path, capsys, pair_url):
    rep = _run(capsys, pair_url, tmp_path / "nonames", "--modalities", "relation,attribute,image")
    assert "name" not in rep["modalities"]
    assert main(["seeds", pair_url, str(tmp_path / "x"), "--set", "stage9.x=1"]) == 2
    assert "unknown configuration key 'stage9'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage1:\n  budget: 50\nstage2:\n  epochs: 3\n")
    assert main(["-q", "seeds", pair_url, str(tmp_path / "y"), "--config", str(cfg)]) == 0
    rep = json.loads((tmp_path / "y" / "report.json").read_text())
    assert rep["config"]["stage1"]["budget"] == 50 and rep["stages"][1]["count"] == 50
