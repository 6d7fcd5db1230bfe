"""The report.json fields behind report.html's newer sections, checked against the run's own
outputs: score histograms per stage (seeds.parquet, the stage records), the UVP baseline at
PSQE's size (a real ``method=uvp`` run), the sample aligned pairs (matches.parquet, the names
and gold links of the dataset), and the per-step seconds and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from psqe_ray.config import load_config
from psqe_ray.core.score_histogram import BINS, WIDTH, histogram_record, score_counts
from psqe_ray.core.step_meter import current_rss_bytes
from psqe_ray.runners import run_seeds
from psqe_ray.io.dataset import Dataset
from psqe_ray.report.samples import sample_pairs


# ---- the pieces -------------------------------------------------------------------------------
def test_score_counts_use_one_fixed_grid() -> None:
    c = score_counts(np.array([-1.0, -0.99, 0.0, 0.019, 0.03, 0.999, 1.0, 1.0000001, -1.5,
                               np.nan], np.float32))
    assert c.shape == (BINS,) and c.sum() == 9  # nan not counted
    assert c[0] == 3  # -1.0, -0.99 and the clipped -1.5
    assert c[50] == 2 and c[51] == 1  # [0, .02): 0.0 and 0.019; 0.03 in the next bin
    assert c[BINS - 1] == 3  # 0.999, 1.0 and a rounding hair above 1
    # additive: partial counts (Ray tasks, clusters) sum to the whole
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    assert (score_counts(x[:300]) + score_counts(x[300:]) == score_counts(x)).all()


def test_histogram_record_keeps_the_occupied_bins_only() -> None:
    acc = score_counts(np.array([0.81, 0.85, 0.85]))
    rej = score_counts(np.array([0.41]))
    rec = histogram_record(acc, rej)
    assert rec["start"] == pytest.approx(0.40) and rec["width"] == WIDTH
    assert len(rec["accepted"]) == len(rec["rejected"]) == 23  # bins 0.40 .. 0.84
    assert rec["rejected"][0] == 1 and rec["accepted"][-3:] == [1, 0, 2]
    assert histogram_record(acc, None)["rejected"] is None
    assert histogram_record(score_counts(np.zeros(0)), score_counts(np.zeros(0)))["accepted"] == []
    with pytest.raises(ValueError):
        histogram_record(acc, acc - 5)


_METER_PROBE = """
import json, time
import numpy as np
from psqe_ray.core.step_meter import StepMeter, current_rss_bytes
before = current_rss_bytes()
with StepMeter(interval=0.005) as m:
    block = np.ones(40 * 2 ** 20 // 8)  # 40 MiB, every page touched
    time.sleep(0.05)  # held long enough for the sampler, if it is under an older peak
    del block
print(json.dumps({"before": before, **m.record()}))
"""


def test_step_meter_sees_memory_taken_inside_the_step() -> None:
    """In a fresh process: a long-lived one (the test session) may hold freed memory that the
    allocator hands out again without the resident size growing."""
    if current_rss_bytes() is None:
        pytest.skip("no /proc/self/statm here: only the high-water mark is known")
    out = subprocess.run([sys.executable, "-c", _METER_PROBE], capture_output=True, text=True,
                         check=True, timeout=120)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    assert rec["peak_rss_bytes"] >= rec["before"] + 35 * 2 ** 20
    assert rec["seconds"] >= 0 and isinstance(rec["peak_rss_sampled"], bool)


def test_sample_pairs_best_borderline_and_wrong() -> None:
    left = np.array([0, 1, 2, 3, 4])
    right = np.array([0, 1, 3, 2, 9])
    score = np.array([0.9, 0.55, 0.95, 0.49, 0.7])
    gold = (np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3]))
    names = ["a", "b", "c", None, "e"]
    out = sample_pairs(left, right, score, threshold=0.5, names_left=names,
                       names_right=[f"r{i}" for i in range(10)], gold=gold, per=2)
    assert [r["left_id"] for r in out["best"]] == [2, 0]
    assert [r["left_id"] for r in out["borderline"]] == [3, 1]  # |0.49-.5|, |0.55-.5|
    assert [r["left_id"] for r in out["wrong"]] == [2, 3]
    assert out["wrong"][0]["gold_right_id"] == 2 and out["wrong"][0]["gold_right_name"] == "r2"
    assert out["borderline"][0]["left_name"] is None  # a missing name stays missing
    assert {r["verdict"] for r in out["best"]} == {"wrong", "correct"}
    verdicts = {r["left_id"]: r["verdict"]
                for r in sample_pairs(left, right, score, gold=gold)["best"]}
    assert verdicts == {2: "wrong", 0: "correct", 4: "unjudged", 1: "correct", 3: "wrong"}
    plain = sample_pairs(left, right, score, per=2)
    assert plain["wrong"] is None and [r["left_id"] for r in plain["borderline"]] == [3, 1]


# ---- one real run -----------------------------------------------------------------------------
def grid(rec: dict, kind: str) -> np.ndarray:
    """A report histogram back on the full grid."""
    full = np.zeros(BINS, np.int64)
    first = int(round((rec["start"] + 1.0) / WIDTH))
    full[first:first + len(rec[kind])] = rec[kind]
    return full


def test_histograms_agree_with_the_stages_and_the_seed_table(pipeline_run) -> None:
    _, out, report = pipeline_run
    stages = {s["name"]: s for s in report["seeds"]["stages"]}
    assert "scores" not in stages["features"]
    for name in ("stage1-cluster", "stage2-global", "stage3-expansion"):
        rec = stages[name]["scores"]
        assert sum(rec["accepted"]) == stages[name]["added"] > 0, name
        assert sum(rec["rejected"]) > 0, name  # more candidates than the stage takes
        assert len(rec["accepted"]) == len(rec["rejected"])
    table = pq.read_table(out / "seeds" / "seeds.parquet").to_pydict()
    for name in ("stage2-mic", "stage3-recheck"):
        rec = stages[name]["scores"]
        assert sum(rec["accepted"]) == stages[name]["count"]
        assert sum(rec["rejected"]) == stages[name]["removed"]
        # the rejected counts are the histogram of the rows MIC removed (seeds.parquet)
        removed = [s for s, st, ok in zip(table["score"], table["stage"], table["accepted"])
                   if st == name and not ok]
        assert (grid(rec, "rejected") == score_counts(np.array(removed, np.float32))).all()
    assert stages["stage2-mic"]["removed"] > 0
    # the last stage's accepted histogram is the histogram of the seeds written
    kept = np.array([s for s, ok in zip(table["score"], table["accepted"]) if ok], np.float32)
    assert (grid(stages["stage3-recheck"]["scores"], "accepted") == score_counts(kept)).all()


def test_uvp_comparison_is_the_uvp_run_at_psqe_size(pipeline_run, tmp_path) -> None:
    data, _, report = pipeline_run
    comp = report["seeds"]["uvp_comparison"]
    seeds = report["seeds"]["seeds"]
    assert comp["count"] == seeds["count"] == comp["psqe"]["count"]
    assert comp["psqe"]["precision"] == seeds["precision"]
    assert comp["psqe"]["edge_coverage"] == report["seeds"]["coverage"]["edge_coverage"]["mean"]
    # the baseline is exactly what `psqe-ray seeds --method uvp` makes with that budget
    uvp = run_seeds(data, str(tmp_path / "uvp"), load_config(None, [
        "method=uvp", f"stage1.budget={comp['count']}"]))
    assert comp["pivot"] == uvp["pivot"]
    assert comp["uvp"]["count"] == uvp["seeds"]["count"]
    assert comp["uvp"]["precision"] == uvp["seeds"]["precision"]
    assert comp["uvp"]["recall"] == uvp["seeds"]["recall"]
    assert comp["uvp"]["edge_coverage"] == uvp["coverage"]["edge_coverage"]["mean"]
    assert "uvp_comparison" not in uvp  # a UVP run has nothing to compare with


def test_samples_come_from_the_matches_with_the_dataset_names(pipeline_run) -> None:
    data, out, report = pipeline_run
    sm = report["align"]["samples"]
    m = pq.read_table(out / "align" / "matches.parquet").to_pydict()
    assert sm["pairs"] == len(m["left_id"]) > 0 and sm["threshold"] == 0.5
    order = np.lexsort((np.array(m["left_id"]), -np.array(m["score"], np.float64)))
    assert [r["left_id"] for r in sm["best"]] == [m["left_id"][i] for i in order[:5]]
    assert all(0 < len(sm[k]) <= 5 for k in ("best", "borderline"))
    ents = Dataset(data).table("entities").to_pydict()
    name = {(s, i): n for s, i, n in zip(ents["side"], ents["entity_id"], ents["name"])}
    gold = Dataset(data).table("gold").to_pydict()
    gold = set(zip(gold["left_id"], gold["right_id"]))
    pairs = set(zip(m["left_id"], m["right_id"]))
    for row in sm["best"] + sm["borderline"] + sm["wrong"]:
        assert (row["left_id"], row["right_id"]) in pairs
        assert row["left_name"] == name["left", row["left_id"]]
        assert row["right_name"] == name["right", row["right_id"]]
    assert sm["wrong"] and all((r["left_id"], r["right_id"]) not in gold for r in sm["wrong"])
    assert all(r["verdict"] == "wrong" for r in sm["wrong"])
    near = sorted(abs(s - 0.5) for s in m["score"])[:5]
    assert [abs(r["score"] - 0.5) for r in sm["borderline"]] == pytest.approx(near, abs=1e-5)
    # report.json on disk holds the same (report.html is rendered from it alone)
    assert json.loads((out / "report.json").read_text())["align"]["samples"] == sm


def test_profile_covers_every_step(pipeline_run) -> None:
    _, _, report = pipeline_run
    steps = [p["step"] for p in report["seeds"]["profile"]]
    assert steps == ["load", "prepare", "features", "stage1-cluster", "stage2-train",
                     "stage2-global", "stage2-mic", "stage3-expansion", "stage3-recheck",
                     "evaluation"]
    assert [p["step"] for p in report["align"]["profile"]] == ["inputs", "train", "search",
                                                               "matching", "evaluation"]
    for p in report["seeds"]["profile"] + report["align"]["profile"]:
        assert p["seconds"] >= 0 and p["peak_rss_bytes"] > 50 * 2 ** 20  # torch alone is more
        assert "worker_peak_rss_bytes" not in p  # in-process: no workers
    assert "profile" not in report  # no encode step in this run
