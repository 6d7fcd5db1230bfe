"""Storage faults on S3 (moto's server on loopback, behind :class:`~psqe_ray.testing.outage.Outage`,
a proxy that stops the server on cue): a job whose store stops in the middle of a write fails
with one clear line (exit status 2), leaves nothing committed half-written, and a rerun once
the store is back ends with the undisturbed result, byte for byte; a dataset whose manifest
lists a missing or corrupt part is refused with one line naming the part."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psqe_ray.cli import main
from psqe_ray.testing.outage import Outage
from psqe_ray.testing.synth import SynthConfig, synthesize

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# a small job: every step runs (Stage I-III, the aligner with its matching, the report)
SETS = ["stage1.budget=60", "stage2.epochs=6", "distributed.checkpoint_every=3",
        "distributed.shards=2", "distributed.partitions=2", "align.dim=16", "align.epochs=3",
        "align.round_epochs=2", "align.batch_size=64"]
ARGS = [x for s in SETS for x in ("--set", s)]


def _fs():
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # a fresh client, as a new process would have
    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture(scope="module")
def store(s3_endpoint):
    """The proxy in front of the moto server; every S3 request of this module goes through
    it (``AWS_ENDPOINT_URL`` points there while the module runs)."""
    import s3fs

    with Outage(s3_endpoint) as proxy:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield proxy
        finally:
            os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def bucket(store) -> str:
    import boto3

    name = f"psqe-faults-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=store.endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def pair(bucket) -> str:
    url = f"{bucket}/pair"
    synthesize(url, SynthConfig(entities=200, seed=5))
    return url


def _run(store: Outage, args: list[str], capsys) -> tuple[int, str]:
    """``psqe-ray -q <args>`` in this process with a fresh S3 client; (exit status, stderr)."""
    _fs()
    capsys.readouterr()
    rc = main(["-q", *args])
    return rc, capsys.readouterr().err


def _files(fs, url: str) -> list[str]:
    """The files under ``url``, relative, with the writers' random tokens masked."""
    root = url.removeprefix("s3://")
    fs.invalidate_cache()
    return sorted(re.sub(r"[0-9a-f]{8}", "*", p.removeprefix(root + "/"))
                  for p in fs.find(root))


@pytest.fixture(scope="module")
def undisturbed(store, pair, bucket) -> dict:
    """The pipeline once with the store up: its outputs' bytes and its files."""
    out = f"{bucket}/undisturbed"
    _fs()
    assert main(["-q", "run", pair, out, *ARGS]) == 0
    fs = _fs()
    root = out.removeprefix("s3://")
    return {"files": _files(fs, out),
            **{rel: fs.cat_file(f"{root}/{rel}") for rel in (
                "seeds/seeds.parquet", "align/alignment.parquet", "align/matches.parquet")}}


# where the store stops: the request that is never answered, and the output it cuts short
CUTS = {
    # the seed step: seeds.parquet written, report.json not, no manifest
    "seeds": ("seeds/report.json", "seeds"),
    # the aligner: alignment.parquet written, matches.parquet not
    "align": ("align/matches.parquet", "align"),
    # the final commit: report.json written, report.html not
    "report": ("report.html", ""),
}


@pytest.mark.parametrize("where", list(CUTS))
def test_store_stops_mid_write_then_rerun_completes(where, store, pair, bucket, undisturbed,
                                                    capsys):
    target, output = CUTS[where]
    out = f"{bucket}/runs/{where}"
    key = f"/{out.removeprefix('s3://')}/{target}"
    store.cut_at(lambda method, path: method == "PUT" and path.split("?")[0] == key)
    try:
        rc, err = _run(store, ["run", pair, out, *ARGS], capsys)
    finally:
        cut = store.cut_request
        store.restore()
    assert cut is not None, f"the job never wrote {key}"
    # one clear line naming what could not be written
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {out}/{target}: cannot write: "), err

    fs = _fs()
    root = out.removeprefix("s3://")
    cut_root = f"{root}/{output}".rstrip("/")
    # nothing half-written is committed: the output cut short has parts but no manifest (its
    # marker says so), and the run's own output is not committed either
    assert not fs.exists(f"{cut_root}/_MANIFEST.json")
    assert not fs.exists(f"{root}/_MANIFEST.json")
    assert fs.exists(f"{cut_root}/_UNCOMMITTED.json")
    written = {"seeds": "seeds.parquet", "align": "alignment.parquet", "report": "report.json"}
    assert fs.exists(f"{cut_root}/{written[where]}")  # cut in the middle, not before it
    if where != "seeds":  # the steps before the cut stay committed
        assert fs.exists(f"{root}/seeds/_MANIFEST.json")

    # the store is back: the rerun clears what the cut left and ends with the undisturbed result
    _rerun_gives_the_undisturbed_result(store, pair, out, undisturbed, capsys)


def _rerun_gives_the_undisturbed_result(store, pair, out, undisturbed, capsys) -> None:
    rc, err = _run(store, ["run", pair, out, *ARGS], capsys)
    assert rc == 0, err
    fs = _fs()
    root = out.removeprefix("s3://")
    for rel in ("seeds/seeds.parquet", "align/alignment.parquet", "align/matches.parquet"):
        assert fs.cat_file(f"{root}/{rel}") == undisturbed[rel], rel
    assert _files(fs, out) == undisturbed["files"]  # no orphan part, marker or lock


def test_store_hangs_on_a_write_then_rerun_completes(store, pair, bucket, undisturbed, capsys):
    """A hung store: it takes the write's request and never answers, nor closes anything.
    The job (a real process) fails after ``PSQE_RAY_STORAGE_TIMEOUT`` per try with one line
    naming the file and commits nothing half-written; the rerun completes.  (botocore's
    ``Expect: 100-continue`` had the PUT wait for the server's answer without any timeout:
    the job hung for good, and this test ran into its subprocess timeout.)"""
    out = f"{bucket}/hung"
    root = out.removeprefix("s3://")
    key = f"/{root}/seeds/report.json"
    store.hang_at(lambda method, path: method == "PUT" and path.split("?")[0] == key)
    env = {**os.environ, "PSQE_RAY_STORAGE_TIMEOUT": "2", "PSQE_RAY_STORAGE_RETRIES": "1"}
    cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "run", pair, out, *ARGS]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        hung = store.cut_request
        store.restore()
    assert hung is not None, f"the job never wrote {key}"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.stderr.splitlines()) == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: {out}/seeds/report.json: cannot write: "), proc.stderr
    fs = _fs()
    assert not fs.exists(f"{root}/seeds/_MANIFEST.json")
    assert not fs.exists(f"{root}/_MANIFEST.json")
    assert fs.exists(f"{root}/seeds/_UNCOMMITTED.json")
    _rerun_gives_the_undisturbed_result(store, pair, out, undisturbed, capsys)


def test_store_stops_in_a_ray_task_then_rerun_resumes(store, pair, bucket, undisturbed,
                                                      tmp_path):
    """The seed job on Ray (a real process, an embedded Ray): the store stops while a map
    task of Stage III writes its candidates; the task's error reaches the user as one line
    through Ray's wrapper; the rerun resumes the committed stages."""
    out = f"{bucket}/ray"
    root = out.removeprefix("s3://")
    prefix = f"/{root}/stages/_scratch/expansion-"
    store.cut_at(lambda method, path: method == "PUT" and path.startswith(prefix)
                 and "/candidates-" in path)
    env = {**os.environ, "PSQE_RAY_NUM_CPUS": "2", "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, str(REPO / "jobs" / "seeds.py"), "-q", pair, out, *ARGS]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    finally:
        cut = store.cut_request
        store.restore()
    assert cut is not None, "the job never wrote Stage III's candidates"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.stderr.splitlines()) == 1, proc.stderr[-3000:]
    assert re.match(rf"error: {re.escape(out)}/stages/_scratch/expansion-[0-9a-f]+/"
                    r"candidates-\d+\.parquet: cannot write: ", proc.stderr), proc.stderr
    fs = _fs()
    assert not fs.exists(f"{root}/_MANIFEST.json")
    assert not fs.exists(f"{root}/stages/stage3-expansion/_MANIFEST.json")
    assert fs.exists(f"{root}/stages/stage2-mic/_MANIFEST.json")

    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(fs.cat_file(f"{root}/report.json"))
    assert {"features", "stage1-cluster", "stage2-train", "stage2-mic"} <= set(
        report["resumed_stages"])
    assert "stage3-expansion" not in report["resumed_stages"]
    # the Ray path gives the in-process seeds (tests/distributed/test_psqe.py): the undisturbed
    # pipeline's, row for row
    got = pq.read_table(fs.open(f"{root}/seeds.parquet"))
    ref = pq.read_table(pa.BufferReader(undisturbed["seeds/seeds.parquet"]))
    assert got.to_pydict() == ref.to_pydict()
    assert not fs.exists(f"{root}/_UNCOMMITTED.json")
    assert not fs.exists(f"{root}/stages/stage3-expansion/_UNCOMMITTED.json")


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_manifest_part_missing_or_corrupt_is_one_line(damage, store, bucket, capsys):
    url = f"{bucket}/damaged-{damage}"
    synthesize(url, SynthConfig(entities=30, seed=1))
    fs = _fs()
    root = url.removeprefix("s3://")
    manifest = json.loads(fs.cat_file(f"{root}/_MANIFEST.json"))
    rel = manifest["tables"]["triples"]["parts"][0]
    part = f"{root}/{rel}"
    if damage == "missing":
        fs.rm_file(part)
    elif damage == "garbage":
        fs.pipe_file(part, b"not parquet at all" * 10)
    else:
        fs.pipe_file(part, fs.cat_file(part)[: fs.size(part) // 2])
    out = f"{bucket}/from-damaged-{damage}"
    rc, err = _run(store, ["seeds", url, out], capsys)
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    problem = {"missing": "no such file, yet the manifest lists it as a part of table "
                          "'triples'",
               "garbage": "unreadable Parquet: ", "truncated": "unreadable Parquet: "}[damage]
    assert err.startswith(f"error: {url}/{rel}: {problem}"), err
    assert not fs.exists(out.removeprefix("s3://"))  # nothing written


def test_an_error_through_rays_wrappers_is_one_line():
    """A DataError raised in a Ray task or Ray Train worker crosses processes pickled and
    arrives wrapped; the line shown is the original one."""
    import pickle

    from ray.exceptions import RayTaskError
    from ray.train import WorkerGroupError

    from psqe_ray.errors import DataError, user_error

    err = DataError("s3://b/out/part.parquet", "cannot write: ConnectionClosedError: reset")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DataError and str(back) == str(err) and back.where == err.where
    task = RayTaskError("expand_map", "Traceback (most recent call last):\n  ...\n", back)
    wrapped = task.as_instanceof_cause()
    assert isinstance(wrapped, DataError) and "\n" in str(wrapped)
    assert user_error(wrapped) == str(err)
    assert user_error(WorkerGroupError("rank 0 failed:\n...", {0: wrapped})) == str(err)
    assert user_error(RuntimeError("a bug")) is None
