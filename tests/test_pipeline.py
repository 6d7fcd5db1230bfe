"""`psqe-ray align` and `psqe-ray run` end to end on a small synthetic pair (in-process)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psqe_ray.cli import main
from psqe_ray.io.dataset import Dataset
from psqe_ray.testing.synth import SynthConfig, synthesize

ALIGN_SETS = ["--set", "align.dim=16", "--set", "align.epochs=6", "--set", "align.round_epochs=2",
              "--set", "align.batch_size=128", "--set", "align.topk=5"]
SEED_SETS = ["--set", "stage2.epochs=10", "--set", "stage1.budget=60"]


@pytest.fixture(scope="module")
def pair_url(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("pipe") / "pair")
    synthesize(url, SynthConfig(entities=250, seed=4))
    return url


@pytest.fixture(scope="module")
def seeds_url(pair_url, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("pipe") / "seeds")
    assert main(["-q", "seeds", pair_url, out, "--method", "uvp", "--set",
                 "stage1.budget=80"]) == 0
    return out


def _json_line(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_align_writes_alignment_and_metrics(tmp_path, capsys, pair_url, seeds_url):
    out = tmp_path / "align"
    assert main(["-q", "align", pair_url, seeds_url, str(out), "--recipe", "eva",
                 *ALIGN_SETS]) == 0
    summary = _json_line(capsys)
    assert summary["recipe"] == "eva" and summary["seeds_used"] == 80
    t = pq.read_table(out / "alignment.parquet")
    n_left = 250
    assert t.num_rows == n_left * 5  # every left entity, dangling ones included
    left = t.column("left_id").to_numpy()
    assert sorted(set(left.tolist())) == list(range(n_left))
    assert t.column("rank").to_pylist()[:5] == [1, 2, 3, 4, 5]
    score = t.column("score").to_numpy().reshape(n_left, 5)
    assert (np.diff(score, axis=1) <= 0).all()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("hits@1", "hits@10", "mrr", "recipe", "seconds_total", "eval_seconds"):
        assert key in metrics
    assert metrics["driver_peak_rss_bytes"] > 50 * 2**20  # this process: torch alone is more
    # the default ranking, balanced: the headline is the balanced scores' ranking, the file's
    # scores are balanced masses (in [0, 1]) and its similarity the cosines
    assert metrics["headline"] == "balanced"
    assert metrics["hits@1"] == metrics["matching"]["ranking"]["hits@1"]
    sim = t.column("similarity").to_numpy().reshape(n_left, 5)
    assert (sim <= 1.0 + 1e-5).all() and not np.allclose(score, sim)
    assert ((score >= 0) & (score <= 1.0 + 1e-6)).all()
    assert set(metrics["variants"]) == {f"{d}/{s}/{p}" for d in ("l2r", "r2l")
                                        for s in ("plain", "csls") for p in ("all", "test")}
    assert 0.3 < metrics["hits@1"] <= metrics["hits@10"] <= 1.0
    # the alignment's rank-1 candidates are the vectors the metrics were computed on
    top1 = t.filter(pa.compute.equal(t.column("rank"), 1))
    gold = Dataset(pair_url).table("gold").to_pydict()
    pred = dict(zip(top1.column("left_id").to_pylist(), top1.column("right_id").to_pylist()))
    hits = np.mean([pred[l] == r for l, r in zip(gold["left_id"], gold["right_id"])])
    assert hits == pytest.approx(metrics["hits@1"], abs=1e-12)  # the file is what is measured
    # the one-to-one alignment: each entity at most once, its figures against the gold links
    m = pq.read_table(out / "matches.parquet")
    ml, mr = m.column("left_id").to_numpy(), m.column("right_id").to_numpy()
    assert m.num_rows > 0 and len(set(ml)) == len(ml) and len(set(mr)) == len(mr)
    assert (m.column("score").to_numpy() >= 0.5).all()
    match = metrics["matching"]
    assert match["method"] == "sinkhorn" and match["matches"] == m.num_rows
    truth = set(zip(gold["left_id"], gold["right_id"]))
    correct = sum((a, b) in truth for a, b in zip(ml.tolist(), mr.tolist()))
    assert match["correct"] == correct and match["recall"] == correct / len(truth)
    assert 0 < match["precision"] <= 1 and 0 < match["f1"] <= 1
    assert set(match["ranking"]) >= {"hits@1", "hits@10", "mrr"}
    # the same command again: the committed result is returned, nothing retrained
    assert main(["-q", "align", pair_url, seeds_url, str(out), "--recipe", "eva",
                 *ALIGN_SETS]) == 0
    assert _json_line(capsys)["seconds_total"] == summary["seconds_total"]


def _table_hits(out, pair_url) -> tuple[float, float]:
    """Hits@1 / Hits@10 read off alignment.parquet itself."""
    t = pq.read_table(out / "alignment.parquet").to_pydict()
    gold = Dataset(pair_url).table("gold").to_pydict()
    partner = dict(zip(gold["left_id"], gold["right_id"]))
    hit = [partner.get(left) == right for left, right in zip(t["left_id"], t["right_id"])]
    top = [h for h, r in zip(hit, t["rank"]) if r == 1]
    return sum(top) / len(partner), sum(hit) / len(partner)


@pytest.mark.parametrize("matching, ranking", [("off", "balanced"), ("greedy", "csls"),
                                               ("off", "plain")])
def test_every_ranking_is_what_the_headline_measures(tmp_path, capsys, pair_url, seeds_url,
                                                     matching, ranking):
    out = tmp_path / "a"
    assert main(["-q", "align", pair_url, seeds_url, str(out), "--recipe", "eva", *ALIGN_SETS,
                 "--set", "align.topk=10", "--set", f"align.matching={matching}",
                 "--set", f"align.ranking={ranking}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "matches.parquet").exists() == (matching != "off")
    assert metrics["headline"] == ("balanced" if ranking == "balanced" else f"l2r/{ranking}/all")
    h1, h10 = _table_hits(out, pair_url)
    # balanced and plain rank exactly what the file holds; CSLS re-ranks each entity's 50 best
    # cosines (of 250 candidates), the headline counts every candidate
    tol = 0.02 if ranking == "csls" else 1e-12
    assert h1 == pytest.approx(metrics["hits@1"], abs=tol)
    assert h10 == pytest.approx(metrics["hits@10"], abs=tol)
    samples = metrics["samples"]
    assert samples["source"] == ("top-1" if matching == "off" else "matches (greedy)")


def test_align_reads_a_seeds_parquet_file(tmp_path, capsys, pair_url):
    f = tmp_path / "my-seeds.parquet"
    pq.write_table(pa.table({"left_id": pa.array(np.arange(40), pa.int64()),
                             "right_id": pa.array(np.arange(40), pa.int64()),
                             "accepted": pa.array([True] * 30 + [False] * 10)}), f)
    out = tmp_path / "a"
    assert main(["-q", "align", pair_url, str(f), str(out), "--recipe", "mclea",
                 *ALIGN_SETS]) == 0
    assert _json_line(capsys)["seeds_used"] == 30


@pytest.mark.parametrize("table,problem", [
    ({"left": [0, 1], "right_id": [0, 1]}, "missing column"),
    ({"left_id": [0, 0], "right_id": [0, 1]}, "duplicate left_id 0"),
    ({"left_id": [0, 9999], "right_id": [0, 1]}, "left_id 9999 is not a left entity"),
    ({"left_id": [0, 1], "right_id": [0.5, 1.0]}, "must be integer"),
    ({"left_id": [0], "right_id": [0]}, "at least 2"),
])
def test_bad_seeds_fail_clearly_and_leave_nothing(tmp_path, capsys, pair_url, table, problem):
    f = tmp_path / "bad.parquet"
    pq.write_table(pa.table(table), f)
    out = tmp_path / "out"
    assert main(["-q", "align", pair_url, str(f), str(out), *ALIGN_SETS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(f) in err and problem in err, err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_align_missing_seeds_and_bad_recipe(tmp_path, capsys, pair_url):
    assert main(["-q", "align", pair_url, str(tmp_path / "nope"), str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    assert main(["-q", "align", pair_url, str(tmp_path / "empty"), str(tmp_path / "o")]) == 2
    assert "without seeds.parquet" in capsys.readouterr().err
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    assert main(["-q", "align", pair_url, str(tmp_path / "junk.parquet"),
                 str(tmp_path / "o")]) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["align", pair_url, "x", "y", "--recipe", "gpt"])
    assert not (tmp_path / "o").exists()


def test_run_writes_seeds_alignment_and_an_html_report(tmp_path, capsys, pair_url):
    out = tmp_path / "run"
    assert main(["-q", "run", pair_url, str(out), "--recipe", "meaformer", *SEED_SETS,
                 *ALIGN_SETS]) == 0
    summary = _json_line(capsys)
    assert summary["seeds"] > 0 and summary["hits@1"] is not None
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == "meaformer" and report["seeds"]["method"] == "psqe"
    assert report["align"]["hits@1"] == summary["hits@1"]
    assert set(report["seconds"]) == {"encode", "seeds", "align", "total"}
    assert (out / "seeds" / "seeds.parquet").exists() and (out / "align" / "alignment.parquet").exists()
    html = (out / "report.html").read_text()
    # every plot is named: stage counts and precision, the stages' score histograms, PSQE vs
    # UVP, coverage, Hits@k (tests/report/ check them, in a browser too)
    figures = [part.split('"', 1)[0] for part in html.split('data-figure="')[1:]]
    assert html.count("<svg") == len(figures) and "meaformer" in html
    assert {"stages: seeds (cumulative)", "stages: precision", "scores-stage1-cluster", "uvp",
            "coverage", "hits"} <= set(figures)
    assert json.loads((out / "_MANIFEST.json").read_text())["stage"] == "run"
