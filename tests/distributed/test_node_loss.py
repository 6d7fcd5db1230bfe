"""A whole non-head node lost mid-job: on a two-node local cluster (a head with no CPUs, so all
the work runs on the worker node), every process of the worker node is SIGKILLed while the job
trains, then a fresh node joins.  Ray's own mechanisms carry the job on what remains: Ray Train
restarts the training worker group (``distributed.max_failures``) and the loop resumes from
its latest checkpoint, lost objects are rebuilt from their lineage (task retries), and the job
ends with the output of an undisturbed run (the in-process run: the Ray path gives it
exactly, tests/distributed/test_psqe.py and test_align.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from psqe_ray.config import load_config
from psqe_ray.runners import run_align, run_seeds
from psqe_ray.testing.cluster import LocalCluster
from psqe_ray.testing.synth import SynthConfig, synthesize

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_timeout")]

WORKER_CPUS = 2  # the training worker's CPU, and one for the tasks that rebuild lost objects


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head without CPUs (the driver, Ray Train's controller, objects the driver puts) and
    one worker node; each test kills the worker node and adds a fresh one."""
    with LocalCluster(0, (WORKER_CPUS,), log_dir=tmp_path_factory.mktemp("jobs"),
                      fast_node_failure=True) as c:
        yield c


def _sets(sets: list[str]) -> list[str]:
    return [x for s in sets for x in ("--set", s)]


def _assert_same(got: Path, expected: Path) -> None:
    """The same table: every row, value and type, and the same metadata but for the
    configuration fingerprint (it names the engine: ``ray`` here, in-process there)."""
    a, b = pq.read_table(got), pq.read_table(expected)
    assert a.equals(b), got.name

    def meta(t):
        return {k: v for k, v in (t.schema.metadata or {}).items() if k != b"psqe.fingerprint"}

    assert meta(a) == meta(b), got.name


def _kill_when(cluster: LocalCluster, job: str, ready, *,
               process: str | None = "RayTrainWorker", timeout: float = 200.0,
               poll: float = 0.05) -> list[int]:
    """Once ``ready()`` holds while the worker node runs a ``process`` (None: whatever it
    runs), SIGKILL the node (every process of it), then start a fresh node.  Returns the pids
    killed."""
    node = len(cluster.nodes) - 1
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.job(job)["status"]
        assert status in ("PENDING", "RUNNING"), \
            f"the job ended before the node was lost: {status}\n{cluster.logs(job)[-3000:]}"
        assert time.monotonic() < deadline, "the point to lose the node at never came"
        if ready() and (process is None or cluster.processes(node, process)):
            break
        time.sleep(poll)
    killed = cluster.kill_node(node)
    cluster.add_node(WORKER_CPUS)
    return killed


SEED_SETS = ["stage2.epochs=16", "stage1.budget=150", "stage3.threshold_start=0.5",
             "stage3.threshold_end=0.6", "distributed.checkpoint_every=2",
             "distributed.shards=2", "distributed.partitions=3", "distributed.block_rows=100",
             "distributed.chunk_rows=64", "threads=1"]


@pytest.fixture(scope="module")
def seed_case(tmp_path_factory) -> tuple[str, Path]:
    """A synthetic pair and its undisturbed seeds (in-process)."""
    root = tmp_path_factory.mktemp("seeds")
    synthesize(str(root / "pair"), SynthConfig(entities=400, seed=5))
    run_seeds(str(root / "pair"), str(root / "ref"), load_config(None, SEED_SETS))
    return str(root / "pair"), root / "ref" / "seeds.parquet"


def _seed_job(cluster: LocalCluster, pair: str, out: Path) -> str:
    return cluster.submit("seeds-node-loss", ["jobs/seeds.py", pair, str(out),
                                              *_sets(SEED_SETS)], wait=False)


def test_seed_job_survives_losing_the_node_in_stage2_training(cluster, seed_case, tmp_path):
    pair, expected = seed_case
    out = tmp_path / "out"
    job = _seed_job(cluster, pair, out)
    killed = _kill_when(cluster, job, lambda: any((out / "stages" / "_train").rglob("state.pkl")))
    # lost mid-training: a checkpoint written, the stage not committed
    assert killed and not (out / "stages" / "stage2-train" / "_MANIFEST.json").exists()
    info = cluster.wait(job, 200)
    assert info["status"] == "SUCCEEDED", cluster.logs(job)[-4000:]
    _assert_same(out / "seeds.parquet", expected)


def test_seed_job_survives_losing_the_node_in_the_global_topk(cluster, seed_case, tmp_path):
    """The node goes as Stage II's training commits: the learned vectors' blocks in its
    object store are lost with it, and the global top-k runs on what remains."""
    pair, expected = seed_case
    out = tmp_path / "out"
    job = _seed_job(cluster, pair, out)
    stages = out / "stages"
    killed = _kill_when(cluster, job, lambda: (stages / "stage2-train" / "_MANIFEST.json")
                        .exists(), process=None, poll=0.01)
    assert killed and not (stages / "stage2-global" / "_MANIFEST.json").exists()
    info = cluster.wait(job, 200)
    assert info["status"] == "SUCCEEDED", cluster.logs(job)[-4000:]
    _assert_same(out / "seeds.parquet", expected)


ALIGN_SETS = ["align.dim=16", "align.epochs=12", "align.round_epochs=3", "align.batch_size=64",
              "align.recipe=pcmea", "align.checkpoint_every=2", "stage1.budget=60",
              "threads=1"]


def test_align_job_survives_losing_the_node_in_training(cluster, tmp_path):
    from psqe_ray.cli import main

    pair, seeds, out = str(tmp_path / "pair"), str(tmp_path / "seeds"), tmp_path / "out"
    synthesize(pair, SynthConfig(entities=200, seed=6))
    assert main(["-q", "seeds", pair, seeds, "--method", "uvp", "--set", "stage1.budget=60"]) == 0
    ref = tmp_path / "ref"
    run_align(pair, seeds, str(ref), load_config(None, ALIGN_SETS))
    job = cluster.submit("align-node-loss", ["jobs/align.py", pair, seeds, str(out),
                                             *_sets(ALIGN_SETS)], wait=False)
    killed = _kill_when(cluster, job, lambda: (out / "_train" / "aligner.ckpt").exists())
    assert killed and not (out / "alignment.parquet").exists()
    info = cluster.wait(job, 200)
    assert info["status"] == "SUCCEEDED", cluster.logs(job)[-4000:]
    for name in ("alignment.parquet", "matches.parquet"):
        _assert_same(out / name, ref / name)
    assert not (out / "_train").exists()  # the checkpoint goes once the alignment is committed
