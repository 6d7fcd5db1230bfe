"""Shared fixtures: the real data folder, an S3 endpoint (moto's server on loopback)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not (SHARED_DATA / "DBP15K").is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (present in CI and on "
                    "developer machines; a fresh clone elsewhere skips real-data tests)")
    return SHARED_DATA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol endpoint: moto's threaded server on 127.0.0.1 (loopback only).

    Sets ``AWS_ENDPOINT_URL`` and dummy credentials for the session, so s3fs, pyarrow and Ray
    Data all talk to it.  Yields the endpoint URL.
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the moto server; yields ``s3://<bucket>``."""
    import boto3
    import s3fs

    name = f"psqe-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster (2 CPUs) shared by the session's Ray tests."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_timeout():
    """Every Ray test gets a wall-clock limit (a pool that cannot schedule hangs forever)."""
    import signal

    def _expired(signum, frame):
        raise TimeoutError("Ray test exceeded 300 s (scheduling deadlock?)")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
    from psqe_ray.testing.models import tiny_bert

    return str(tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert"))


@pytest.fixture(scope="session")
def tiny_resnet_file(tmp_path_factory) -> str:
    """A full checkpoint of a small ResNet (one block per stage), random weights."""
    import torch
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-resnet.pt"
    torch.save(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10), path)
    return str(path)
