"""Atomic dataset writes and validated reads on local paths and memory://."""

from __future__ import annotations

import json
import uuid

import fsspec
import pyarrow as pa
import pytest

from psqe_ray.errors import DataError, DestinationError
from psqe_ray.io.dataset import MANIFEST, Dataset
from psqe_ray.io.writer import DatasetWriter


def _entities(side: str, n: int) -> pa.Table:
    return pa.table({"side": [side] * n, "entity_id": pa.array(range(n), pa.int64()),
                     "uri": [f"{side}/{i}" for i in range(n)], "name": [f"e{i}" for i in range(n)]})


def _write(url: str, fp: str = "fp1", extra=None) -> dict:
    with DatasetWriter(url, stage="test", fingerprint=fp) as w:
        w.write("entities", _entities("left", 3))
        w.write("entities", _entities("right", 2))
        w.write("triples", pa.table({"side": ["left"], "head": [0], "relation": [0], "tail": [2]}))
        if extra:
            extra(w)
        return w.commit(meta={"k": 1})


@pytest.fixture(params=["local", "memory"])
def url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds")
    return f"memory://psqe-test-{uuid.uuid4().hex}/ds"


def test_round_trip_and_metadata(url):
    manifest = _write(url, extra=lambda w: w.put_file("images/left/0.png", b"png"))
    ds = Dataset(url, validate=True)
    assert ds.tables == ["entities", "triples"]
    assert ds.entity_counts() == {"left": 3, "right": 2}
    assert ds.table("entities", side="right").column("uri").to_pylist() == ["right/0", "right/1"]
    assert manifest["meta"] == {"k": 1}
    assert manifest["files"] == [f"images/{manifest['token']}/left/0.png"]
    fs, _ = fsspec.core.url_to_fs(ds.url_of(manifest["files"][0]))
    assert fs.cat_file(fs._strip_protocol(ds.url_of(manifest["files"][0]))) == b"png"


def test_failed_write_leaves_nothing(tmp_path):
    dst = tmp_path / "out"
    with pytest.raises(DataError, match="reference to unknown left entities: id 7"):
        with DatasetWriter(str(dst), stage="test", fingerprint="x") as w:
            w.write("entities", _entities("left", 3))
            w.write("entities", _entities("right", 3))
            w.write("gold", pa.table({"left_id": [7], "right_id": [0]}))
            w.commit()
    assert not dst.exists()


def test_exception_in_block_leaves_existing_folder_empty(tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    with pytest.raises(RuntimeError):
        with DatasetWriter(str(dst), stage="test", fingerprint="x") as w:
            w.write("entities", _entities("left", 3))
            raise RuntimeError("boom")
    assert dst.exists() and list(dst.iterdir()) == []


def test_same_fingerprint_is_skipped_other_is_refused(url):
    first = _write(url)
    with DatasetWriter(url, stage="test", fingerprint="fp1") as w:
        assert w.committed
    with pytest.raises(DestinationError, match="already holds a different dataset"):
        _write(url, fp="fp2")
    assert Dataset(url).manifest["token"] == first["token"]


def test_unrelated_files_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match="not empty and holds no psqe-ray dataset"):
        _write(str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_reader_errors(tmp_path):
    with pytest.raises(DataError, match="no such dataset"):
        Dataset(str(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="no _MANIFEST.json"):
        Dataset(str(tmp_path / "plain"))
    url = str(tmp_path / "ds")
    _write(url)
    (tmp_path / "ds" / MANIFEST).write_text("{broken")
    with pytest.raises(DataError, match="malformed manifest"):
        Dataset(url)


def test_reader_detects_tampering(tmp_path):
    url = str(tmp_path / "ds")
    m = _write(url)
    part = tmp_path / "ds" / m["tables"]["triples"]["parts"][0]
    # a part from another table, renamed: the schema metadata gives it away
    ent = tmp_path / "ds" / m["tables"]["entities"]["parts"][0]
    part.write_bytes(ent.read_bytes())
    with pytest.raises(DataError, match="schema metadata says 'entities', expected 'triples'"):
        Dataset(url).validate()
    part.unlink()
    with pytest.raises(DataError, match=r"triples/part-00000-.*: no such file"):
        Dataset(url).table("triples")


def test_manifest_row_counts_checked(tmp_path):
    url = str(tmp_path / "ds")
    _write(url)
    path = tmp_path / "ds" / MANIFEST
    m = json.loads(path.read_text())
    m["tables"]["entities"]["rows"]["left"] = 99
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match="do not match the manifest"):
        Dataset(url, validate=True)
