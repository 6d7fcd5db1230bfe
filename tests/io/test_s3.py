"""Imports written to S3 (moto's server on loopback) read back identical to local imports."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from psqe_ray.cli import main
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.inspect import inspect_dataset

N_LEFT, N_RIGHT = 9, 8
RIGHT_BASE = 100  # raw ids: left 0..8, right 100..107 (one id space)
DIM = 6


def write_tiny_pair(root: Path) -> list[str]:
    """A small random pair with every optional part; returns the extra CLI arguments."""
    rng = np.random.default_rng(11)
    src = root / "src"
    src.mkdir(parents=True)
    left = list(rng.permutation(N_LEFT))
    right = [RIGHT_BASE + i for i in rng.permutation(N_RIGHT)]
    uri = {i: f"http://fr.example.org/r/Entit%C3%A9_{i}" for i in left}
    uri.update({i: f"http://en.example.org/r/Entity_{i}" for i in right})

    def lines(name: str, rows) -> None:
        (src / name).write_text("".join("\t".join(map(str, r)) + "\n" for r in rows),
                                encoding="utf-8")

    lines("ent_ids_1", [(i, uri[i]) for i in left])
    lines("ent_ids_2", [(i, uri[i]) for i in right])
    rels = {r: f"http://example.org/ontology/rel_{r}" for r in range(500, 506)}
    lines("rel_ids", sorted(rels.items()))
    for k, ids in ((1, left), (2, right)):
        triples = {(int(rng.choice(ids)), int(rng.choice(list(rels))), int(rng.choice(ids)))
                   for _ in range(20)}
        lines(f"triples_{k}", sorted(triples))
        lines(f"training_attrs_{k}", [(uri[i], *(f"attr{a}" for a in range(int(i) % 3 + 1)))
                                      for i in ids[::2]])
    lines("ill_ent_ids", [(i, RIGHT_BASE + i) for i in range(min(N_LEFT, N_RIGHT)) if i % 4])
    names = root / "names.json"
    names.write_text(json.dumps([[int(i), ["name", str(i)]] for i in left[:4] + right[:3]]))
    images = root / "img.pkl"
    images.write_bytes(pickle.dumps({int(i): rng.standard_normal(DIM).astype(np.float32)
                                     for i in (left[1:6] + right[2:5])}))
    return [str(src), "--names", str(names), "--image-features", str(images)]


def import_to(capsys, args: list[str], dst: str, seed: int = 0, fmt: str = "dbp15k") -> dict:
    src, *extra = args
    rc = main(["import", "--format", fmt, src, dst, *extra, "--seed", str(seed)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def sorted_rows(t: pa.Table) -> pa.Table:
    keys = [(f.name, "ascending") for f in t.schema if not pa.types.is_fixed_size_list(f.type)]
    return t.sort_by(keys)


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    assert a.tables == b.tables
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"]
    for name in a.tables:
        assert a.counts(name) == b.counts(name), name
        ta, tb = sorted_rows(a.table(name)), sorted_rows(b.table(name))
        assert ta.schema == tb.schema, name
        assert ta.equals(tb), name
        assert ta.to_pylist() == tb.to_pylist(), name


def test_tiny_pair_on_s3_reads_back_like_local(tmp_path, capsys, s3_bucket):
    args = write_tiny_pair(tmp_path)
    s3_url = f"{s3_bucket}/ds"
    local_url = str(tmp_path / "local")
    out_s3 = import_to(capsys, args, s3_url, seed=9)
    out_local = import_to(capsys, args, local_url, seed=9)
    assert out_s3["rows"] == out_local["rows"]
    s3_ds, local_ds = Dataset(s3_url), Dataset(local_url)
    assert sorted(s3_ds.tables) == sorted(["entities", "relations", "triples", "attributes",
                                           "gold", "features/image"])
    assert_same_dataset(s3_ds, local_ds)
    assert s3_ds.entity_counts() == {"left": N_LEFT, "right": N_RIGHT}

    info = inspect_dataset(s3_url)
    assert info["validation"] == {"ok": True, "problems": []}
    local_info = inspect_dataset(local_url)
    for key in ("entities", "triples", "relations", "attributes", "gold", "modalities", "dims",
                "tables", "fingerprint"):
        assert info[key] == local_info[key], key

    # the same import again is a no-op; another seed is refused and changes nothing
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = s3_url.removeprefix("s3://")
    before = {p: fs.cat_file(p) for p in fs.find(root)}
    import_to(capsys, args, s3_url, seed=9)
    src, *extra = args
    rc = main(["import", "--format", "dbp15k", src, s3_url, *extra, "--seed", "10"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith(f"error: {s3_url}: already holds a different dataset")
    fs.invalidate_cache()
    assert {p: fs.cat_file(p) for p in fs.find(root)} == before


def test_real_fr_en_on_s3_reads_back_like_local(tmp_path, capsys, s3_bucket, shared_data):
    src = str(shared_data / "DBP15K" / "fr_en")
    names = str(shared_data / "DBP15K" / "translated_ent_name" / "dbp_fr_en.json")
    s3_url = f"{s3_bucket}/fr_en"
    local_url = str(tmp_path / "fr_en")
    import_to(capsys, [src, "--names", names], s3_url, seed=1)
    import_to(capsys, [src, "--names", names], local_url, seed=1)
    s3_ds, local_ds = Dataset(s3_url), Dataset(local_url)
    assert_same_dataset(s3_ds, local_ds)
    info = inspect_dataset(s3_url)
    assert info["validation"] == {"ok": True, "problems": []}
    assert info["entities"] == local_ds.entity_counts()


def test_s3_error_is_one_line_in_a_real_process(tmp_path, s3_endpoint):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ent_ids_1").write_text("0\thttp://a/A\n")
    (src / "ent_ids_2").write_text("1\thttp://b/B\n")
    (src / "triples_1").write_text("")
    (src / "triples_2").write_text("")
    url = "s3://psqe-no-such-bucket-proc/ds"
    proc = subprocess.run([sys.executable, "-m", "psqe_ray.cli", "import", "--format", "dbp15k",
                           str(src), url], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {url}: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr


def test_source_on_s3_imports_like_local_source(tmp_path, capsys, s3_bucket):
    import s3fs

    args = write_tiny_pair(tmp_path)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = s3_bucket.removeprefix("s3://")
    local_src, _, names, _, images = args
    for path in Path(local_src).iterdir():
        fs.put_file(str(path), f"{bucket}/in/src/{path.name}")
    fs.put_file(names, f"{bucket}/in/names.json")
    fs.put_file(images, f"{bucket}/in/img.pkl")
    s3_args = [f"{s3_bucket}/in/src", "--names", f"{s3_bucket}/in/names.json",
               "--image-features", f"{s3_bucket}/in/img.pkl"]
    import_to(capsys, s3_args, str(tmp_path / "from_s3"), seed=2)
    import_to(capsys, args, str(tmp_path / "from_local"), seed=2)
    a, b = Dataset(str(tmp_path / "from_s3")), Dataset(str(tmp_path / "from_local"))
    assert a.manifest["meta"]["source"] == f"{s3_bucket}/in/src"
    assert_same_dataset(a, b)
