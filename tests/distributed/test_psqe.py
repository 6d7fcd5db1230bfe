"""The distributed PSQE path on real Ray clusters: same seeds as in-process, resume after a
kill, and ``ray job submit`` on a two-node local cluster with data on an S3 endpoint."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from psqe_ray.config import load_config
from psqe_ray.runners import engine_for, run_seeds
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import read_bytes, resolve
from psqe_ray.testing.cluster import LocalCluster
from psqe_ray.testing.kill import run_until
from psqe_ray.testing.synth import SynthConfig, synthesize

REPO = Path(__file__).resolve().parents[2]
SETS = ["stage2.epochs=12", "stage1.budget=150", "stage3.threshold_start=0.5",
        "stage3.threshold_end=0.6", "distributed.checkpoint_every=4", "distributed.shards=2",
        "distributed.partitions=3", "distributed.block_rows=100",
        "distributed.chunk_rows=64"]


@pytest.fixture(scope="module")
def pair_url(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("dpsqe") / "pair")
    synthesize(url, SynthConfig(entities=400, seed=5))
    return url


def _seeds(url: str) -> dict[str, list]:
    fs, path = resolve(url)
    t = pq.read_table(fs.open(path.rstrip("/") + "/seeds.parquet"))
    return {c: t.column(c).to_pylist() for c in t.column_names}


def _inprocess(pair_url: str, out: str) -> dict[str, list]:
    run_seeds(pair_url, out, load_config(None, SETS))
    return _seeds(out)


@pytest.fixture(scope="module")
def reference_out(pair_url, tmp_path_factory) -> Path:
    """The in-process run's output folder (the training runs `threads` torch threads on both
    engines)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run_seeds(pair_url, str(out), load_config(None, SETS))
    return out


@pytest.fixture(scope="module")
def reference(reference_out) -> dict[str, list]:
    """In-process seeds."""
    return _seeds(str(reference_out))


def _report_figures(report: dict) -> dict:
    """report.html's seed figures, the same on both engines: score histograms per stage and
    PSQE vs UVP at equal size."""
    return {"scores": {s["name"]: s.get("scores") for s in report["stages"]},
            "uvp_comparison": report.get("uvp_comparison")}


def test_distributed_path_gives_the_inprocess_seeds(pair_url, reference, reference_out,
                                                    tmp_path, ray_local, ray_timeout,
                                                    monkeypatch, caplog):
    # a relative output, as the README's main job gives: Ray Train's workers run in another
    # working directory, yet write the learned vectors into the right stage folder
    monkeypatch.chdir(tmp_path)
    out = "out"
    cfg = load_config(None, SETS)
    with caplog.at_level(logging.INFO, logger="psqe_ray"):
        report = run_seeds(pair_url, out, cfg, engine=engine_for("ray"))
    got = _seeds(out)
    assert got == reference  # accepted seeds in order, scores, sources, rejections
    ref_report = json.loads((reference_out / "report.json").read_text())
    figures = _report_figures(report)
    assert figures == _report_figures(ref_report)
    assert figures["scores"]["stage2-global"]["rejected"] and figures["uvp_comparison"]["uvp"]
    # seconds and peak memory per step; on Ray the workers' peak where the step ran tasks
    profile = {p["step"]: p for p in report["profile"]}
    assert [p["step"] for p in report["profile"]] == [p["step"] for p in ref_report["profile"]]
    assert profile["stage2-train"]["worker_peak_rss_bytes"] > 0
    assert all(p["peak_rss_bytes"] > 0 for p in report["profile"])
    # the Ray Train worker's epochs reach the driver's log (the first and the last at least)
    lines = [r.getMessage() for r in caplog.records if r.name == "psqe_ray.progress"]
    assert any(m.startswith("stage2 training: epoch 1/") for m in lines), lines
    assert any(f"epoch {cfg.stage2.epochs}/{cfg.stage2.epochs}, loss" in m for m in lines), lines
    stages = {s["name"]: s for s in report["stages"]}
    # the case exercises every distributed step
    assert stages["stage1-cluster"]["added"] > 0 and stages["stage2-global"]["added"] > 0
    assert stages["stage2-mic"]["removed"] > 0 and stages["stage3-expansion"]["added"] > 0
    assert report["engine"] == "ray" and report["resumed_stages"] == []
    res = report["resources"]
    # 400 entities per side in blocks of 128 rows (chunks of 64): 4 blocks per side
    assert res["features"]["blocks"] == 8 and res["stage2-global"]["shards"] == 2
    assert res["stage2-train"]["workers"] == 1 and res["stage3-expansion"]["partitions"] == 3
    assert all("gpus" in r for r in res.values())
    for name in ("features", "stage1-cluster", "stage2-train", "stage2-global", "stage2-mic",
                 "stage3-expansion", "stage3-recheck"):
        assert Dataset(f"{out}/stages/{name}").manifest["stage"] == name
    assert not (Path(out) / "stages" / "_scratch").exists()
    # the vectors are committed block by block, by the tasks that made them
    for name, kind in (("features", "fused"), ("stage2-train", "learned")):
        blocks = Dataset(f"{out}/stages/{name}").manifest["meta"]["blocks"][kind]
        assert [[a, b] for a, b, _ in blocks["left"]] == [[0, 128], [128, 256], [256, 384],
                                                          [384, 400]]
        assert all((Path(out) / "stages" / name / rel).exists()
                   for side in ("left", "right") for _, _, rel in blocks[side])
        # the fusion of this pair is ~8 % non-zero: committed as CSR rows; learned: dense
        cols = pq.read_schema(Path(out) / "stages" / name / blocks["left"][0][2]).names
        assert ("indices" in cols) == (kind == "fused") and ("vector" in cols) == (kind != "fused")
    # Ray Train wrote its checkpoints under the run's storage
    assert list((Path(out) / "stages" / "_train").rglob("state.pkl"))


def test_two_training_workers_all_reduce(pair_url, reference, tmp_path, ray_local, ray_timeout):
    """Data-parallel Stage II (two Ray Train workers, gradients all-reduced): a different but
    equally good seed set (each worker's slice has its own in-batch negatives)."""
    out = str(tmp_path / "out")
    report = run_seeds(pair_url, out, load_config(None, SETS + [
        "distributed.train_workers=2", "distributed.train_cpus=0.5", "threads=1"]),
        engine=engine_for("ray"))
    res = report["resources"]["stage2-train"]
    assert res["workers"] == 2 and res["threads"] == 1
    gold = Dataset(pair_url).table("gold").to_pydict()
    gold = set(zip(gold["left_id"], gold["right_id"]))
    ref = [(a, b) for a, b, ok in zip(reference["left_id"], reference["right_id"],
                                     reference["accepted"]) if ok]
    ref_precision = sum(p in gold for p in ref) / len(ref)
    assert report["seeds"]["count"] >= 0.8 * len(ref)
    assert report["seeds"]["precision"] >= ref_precision - 0.05


def test_rerun_after_kill_skips_committed_stages(pair_url, reference, reference_out, tmp_path,
                                                 ray_local, ray_timeout):
    out = tmp_path / "out"
    run_until([sys.executable, str(REPO / "jobs" / "seeds.py"), pair_url, str(out),
               *sum((["--set", s] for s in SETS), [])],
              out / "stages" / "stage2-train" / "_MANIFEST.json", what="training committed",
              env={**os.environ, "PSQE_RAY_NUM_CPUS": "2"}, poll=0.2)
    assert not (out / "_MANIFEST.json").exists() and not (out / "seeds.parquet").exists()
    report = run_seeds(pair_url, str(out), load_config(None, SETS), engine=engine_for("ray"))
    assert {"features", "stage1-cluster", "stage2-train"} <= set(report["resumed_stages"])
    assert _seeds(str(out)) == reference
    # the resumed stages' histograms come back from their commits
    ref_report = json.loads((reference_out / "report.json").read_text())
    assert _report_figures(report) == _report_figures(ref_report)
    resumed = {p["step"] for p in report["profile"] if p.get("resumed")}
    assert resumed == set(report["resumed_stages"])


def test_sharded_ivf_search_on_ray_equals_the_inprocess_search(ray_local, ray_timeout, tmp_path):
    """The search plan depends on the size only: IVF shards in Ray tasks, merged, give the
    in-process result bit for bit (and exact plans split per CPU give the exact answer)."""
    import numpy as np

    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.blocks import row_ranges
    from psqe_ray.distributed.blocks import put_sharded
    from psqe_ray.distributed.psqe import RaySeedGenerator

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, 16)).astype(np.float32)
    left = centres[rng.integers(0, 30, 3000)] + 0.3 * rng.standard_normal((3000, 16))
    right = centres[rng.integers(0, 30, 2500)] + 0.3 * rng.standard_normal((2500, 16))
    left, right = left.astype(np.float32), right.astype(np.float32)
    for sets in (["search.index=ivf", "search.shard_rows=1000"], ["search.exact_below=10000"]):
        cfg = load_config(None, sets)
        local = SeedGenerator(cfg)._global_topk(left, right, 5)
        ray_gen = RaySeedGenerator(cfg, str(tmp_path / "out"), "fp")
        ray_gen._current = "stage2-global"
        got = ray_gen._global_topk(put_sharded(left, row_ranges(3000, 700, 100)),
                                   put_sharded(right, row_ranges(2500, 700, 100)), 5)
        for a, b in zip(local, got):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
        plans = ray_gen.resources_["stage2-global"]["search"]
        if "search.index=ivf" in sets:
            assert [p["shards"] for p in plans] == [3, 3] and plans[0]["kind"] == "ivf"
        else:
            assert plans[0]["kind"] == "exact" and plans[0]["shards"] == 2  # one per CPU


@pytest.fixture(scope="module")
def two_nodes(s3_endpoint, ray_local, tmp_path_factory) -> LocalCluster:
    """The module's two-node cluster (a head and a second ``ray start`` node, one CPU each;
    its processes see the S3 endpoint: jobs read and write the bucket from every node).
    Started after the session's own Ray, on other ports."""
    with LocalCluster(1, (1,), log_dir=tmp_path_factory.mktemp("jobs")) as cluster:
        yield cluster


def _sets(sets: list[str]) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


def test_ray_job_submit_on_two_node_cluster_with_s3(pair_url, tmp_path, s3_bucket, two_nodes,
                                                    ray_timeout):
    import fsspec

    # the dataset goes to the bucket; the job reads it and writes its output there
    s3 = fsspec.filesystem("s3")
    s3.put(pair_url, f"{s3_bucket}/pair", recursive=True)
    data, out = f"{s3_bucket}/pair", f"{s3_bucket}/runs/one"
    expected = _inprocess(data, str(tmp_path / "ref"))
    two_nodes.submit("seeds", ["jobs/seeds.py", data, out, *_sets(SETS)])
    assert _seeds(out) == expected
    fs, path = resolve(out)
    report = json.loads(read_bytes(fs, f"{path}/report.json", f"{out}/report.json"))
    assert report["engine"] == "ray" and report["seeds"]["count"] == len(
        [a for a in expected["accepted"] if a])
    assert s3.exists(f"{out}/stages/stage2-train/_MANIFEST.json")


def test_pipeline_job_on_two_nodes_reports_each_nodes_work(pair_url, s3_bucket, two_nodes,
                                                           ray_timeout):
    """``jobs/run.py`` (PSQE seeds on Ray, the aligner on Ray Train, the report) submitted to
    the two-node cluster: ``report.json`` names both nodes, the tasks and actors each ran and
    the bytes each read, and the counts add up to the work the job did."""
    import fsspec

    s3 = fsspec.filesystem("s3")
    s3.put(pair_url, f"{s3_bucket}/pair", recursive=True)
    data, out = f"{s3_bucket}/pair", f"{s3_bucket}/runs/pipeline"
    align = ["align.dim=16", "align.epochs=4", "align.round_epochs=2", "align.batch_size=64"]
    info = two_nodes.submit("run", ["jobs/run.py", data, out, *_sets(SETS + align)], limit=240)
    fs, path = resolve(out)
    report = json.loads(read_bytes(fs, f"{path}/report.json", f"{out}/report.json"))
    nodes = report["nodes"]
    assert set(nodes) == two_nodes.node_ids() and len(nodes) == 2
    for entry in nodes.values():  # both nodes did work, and read what it was given
        assert sum(entry["tasks"].values()) + sum(entry["actors"].values()) > 0, nodes
        assert entry["bytes_read"] == entry["bytes_from_storage"] + entry["bytes_from_objects"]
        assert entry["bytes_from_objects"] > 0
    # the driver (on the node Ray names) read the dataset; its reads are kept apart
    assert [n for n, e in nodes.items() if e.get("driver_bytes_read")] == [info["driver_node_id"]]

    def total(key: str, kind: str) -> int:
        return sum(e[key].get(kind, 0) for e in nodes.values())

    res = report["seeds"]["resources"]
    assert total("tasks", "cluster-sample") == res["stage1-cluster"]["tasks"]
    assert total("tasks", "mic-map") == res["stage2-mic"]["partitions"] \
        + res["stage3-recheck"].get("partitions", 0)
    assert total("tasks", "expansion-map") == res["stage3-expansion"]["partitions"] == 3
    seeds_shards = sum(e["tasks"].get("topk-shard", 0) for e in report["seeds"]["nodes"].values())
    assert seeds_shards == 2 * res["stage2-global"]["shards"]  # both ways
    assert total("tasks", "topk-shard") > seeds_shards  # the aligner's top-k searches too
    assert total("actors", "stage2-train") == total("actors", "align-train") == 1
    blocks = res["features"]["blocks"]  # one task per row block for each feature step
    assert total("tasks", "fuse") == blocks >= 2  # the seeds fuse, the aligner does not
    # both the seeds and the aligner made their inputs block by block
    assert total("tasks", "features-raw") == total("tasks", "features-prepare") == 2 * blocks
    # the map tasks read their seed partitions from the bucket
    assert sum(e["bytes_from_storage"] for e in nodes.values()) > 0
    # report.json's nodes is the sum of the steps' (the seed report's and the aligner's)
    steps = report["seeds"]["nodes"], report["align"]["nodes"]
    for node, entry in nodes.items():
        tasks = {}  # the seeds' tasks and the aligner's (its features, made block by block)
        for st in steps:
            for kind, n in st.get(node, {}).get("tasks", {}).items():
                tasks[kind] = tasks.get(kind, 0) + n
        assert entry["tasks"] == tasks
        assert entry["bytes_read"] == sum(st.get(node, {}).get("bytes_read", 0) for st in steps)
    assert report["align"]["hits@1"] is not None
