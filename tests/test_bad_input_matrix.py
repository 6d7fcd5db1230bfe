"""The bad-input matrix (issue 14): every kind of bad input, through the real entry points.

Each case makes one bad input under ``tmp_path`` and runs ``psqe-ray ...`` or
``python jobs/<job>.py ...`` as a real process, with recognisable fake AWS credentials in its
environment.  Every case must end the same way: exit status 2, one line ``error: <where>:
<problem>`` naming the problem (no traceback), nothing written anywhere under ``tmp_path`` (no
manifest, no part, no folder left behind), and no credential in its output or in any file.

Valid but unusual input (unicode and empty names, self-loops, duplicate triples, raw ids beyond
int32) is accepted, not refused: :func:`test_unusual_but_valid_input_is_accepted`.  Two runs on
one output at once: :func:`test_two_runs_on_one_output_one_wins_the_other_is_refused`.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psqe_ray.io.dataset import MANIFEST, Dataset
from psqe_ray.io.writer import DatasetWriter
from psqe_ray.testing.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY_ID = "AKIAPSQEFAKEKEY98765"
FAKE_SECRET = "psqeFakeSecret/9xZqWv+Lk3"
URL_PASSWORD = "hunter2-psqe-pw"
SECRETS = (FAKE_KEY_ID, FAKE_SECRET, URL_PASSWORD)
QUICK_SEEDS = ["--method", "uvp", "--set", "stage1.budget=40"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "PSQE_RAY_STORAGE_RETRIES": "0",
           "PSQE_RAY_NUM_CPUS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("AWS_ENDPOINT_URL", None)
    env.update(extra)
    return env


def _command(argv: list[str]) -> list[str]:
    if argv[0] == "psqe-ray":
        return [sys.executable, "-m", "psqe_ray.cli", *argv[1:]]
    return [sys.executable, *argv]  # jobs/<job>.py


def _refused_port() -> int:
    """A loopback port nobody listens on (bound to learn a free number, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


# -- inputs ---------------------------------------------------------------------------------

FR, EN = "http://fr.dbpedia.org/resource/", "http://dbpedia.org/resource/"
LEFT = [(0, FR + "Paris"), (1, FR + "Lyon"), (2, FR + "Caf%C3%A9_de_Flore"), (3, FR + "Nantes")]
RIGHT = [(10, EN + "Paris"), (11, EN + "Lyon"), (12, EN + "Café_de_Flore"), (13, EN + "Nantes")]
TRIPLES = {1: [(0, 100, 1), (1, 101, 2), (2, 100, 3)], 2: [(10, 100, 11), (11, 101, 12)]}


def _lines(path: Path, rows) -> None:
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")


def layout(root: Path, left=LEFT, right=RIGHT, triples=TRIPLES) -> Path:
    """A DBP15K-layout folder (``ent_ids_*``, ``triples_*``, ``ill_ent_ids``, ``rel_ids``)."""
    root.mkdir(parents=True, exist_ok=True)
    _lines(root / "ent_ids_1", left)
    _lines(root / "ent_ids_2", right)
    _lines(root / "triples_1", triples[1])
    _lines(root / "triples_2", triples[2])
    _lines(root / "ill_ent_ids", [(a, b) for (a, _), (b, _) in zip(left, right)])
    _lines(root / "rel_ids", [(100, "http://dbpedia.org/ontology/city"),
                              (101, "http://dbpedia.org/ontology/near")])
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A synthetic pair and a seeds output committed on it, made once (copied per case)."""
    from psqe_ray.cli import main

    root = tmp_path_factory.mktemp("matrix-base")
    synthesize(str(root / "pair"), SynthConfig(entities=150, seed=3, image_files=0.0))
    assert main(["-q", "seeds", str(root / "pair"), str(root / "seeds"), *QUICK_SEEDS]) == 0
    return {"pair": root / "pair", "seeds": root / "seeds"}


class Ctx:
    """What a case's setup works with: its own folder and copies of the base inputs."""

    def __init__(self, tmp: Path, base: dict[str, Path]) -> None:
        self.tmp, self.base = tmp, base
        self.env: dict[str, str] = {}
        self.holders: list[subprocess.Popen] = []

    def pair(self, name: str = "pair") -> str:
        shutil.copytree(self.base["pair"], self.tmp / name)
        return str(self.tmp / name)

    def seeds(self, name: str = "seeds") -> str:
        shutil.copytree(self.base["seeds"], self.tmp / name)
        return str(self.tmp / name)

    def src(self) -> Path:
        return layout(self.tmp / "src")

    def seeds_file(self, table: dict) -> str:
        pq.write_table(pa.table(table), self.tmp / "bad-seeds.parquet")
        return str(self.tmp / "bad-seeds.parquet")

    def p(self, rel: str) -> str:
        return str(self.tmp / rel)


def _import(ctx: Ctx, *extra: str) -> list[str]:
    return ["psqe-ray", "-q", "import", "--format", "dbp15k", str(ctx.src()), ctx.p("ds"), *extra]


def _edit_manifest(url: str, **changes) -> None:
    path = Path(url) / MANIFEST
    m = json.loads(path.read_text())
    m.update(changes)
    path.write_text(json.dumps(m))


def _hold_lock(ctx: Ctx, out: str) -> None:
    """Another process holds the output's lock (as a running job does) until the case ends."""
    os.makedirs(out, exist_ok=True)
    code = textwrap.dedent(f"""
        import fcntl, json, os, sys, time
        fd = os.open({os.path.join(out, '_LOCK')!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({{"pid": os.getpid(), "host": "h", "since": "now"}}).encode())
        print("held", flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    ctx.holders.append(proc)


# -- the cases ----------------------------------------------------------------------------
# each: (id, setup(ctx) -> argv, expected substrings of the error line)

@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]


def _c(id: str, *expect: str):
    def deco(fn):
        CASES.append(Case(id, fn, expect))
        return fn
    return deco


CASES: list[Case] = []


# import: the source layout and its files
@_c("import-missing-file", "triples_2", "no such file")
def _(ctx):
    argv = _import(ctx)
    os.remove(ctx.tmp / "src" / "triples_2")
    return argv


@_c("import-malformed-line", "triples_1:2", "malformed line")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "triples_1", [(0, 100, 1), (1, 101)])
    return argv


@_c("import-id-not-an-integer", "ent_ids_2:3", "not an integer")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "ent_ids_2", [*RIGHT[:2], ("1x", EN + "Bad"), *RIGHT[3:]])
    return argv


@_c("import-duplicate-entity-id", "ent_ids_1:5", "duplicate entity id 1")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "ent_ids_1", [*LEFT, (1, FR + "Doublon")])
    return argv


@_c("import-id-in-both-graphs", "ent_ids_2", "also appears in ent_ids_1")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "ent_ids_2", [*RIGHT, (0, EN + "Clash")])
    return argv


@_c("import-dangling-triple", "triples_2:3", "unknown right entity (tail) 99")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "triples_2", [*TRIPLES[2], (10, 100, 99)])
    return argv


@_c("import-relation-not-in-rel_ids", "triples_1:4", "relation id 999 is not in rel_ids")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "triples_1", [*TRIPLES[1], (0, 999, 1)])
    return argv


@_c("import-not-utf8", "triples_1:2", "not UTF-8")
def _(ctx):
    argv = _import(ctx)
    (ctx.tmp / "src" / "triples_1").write_bytes(b"0\t100\t1\n\xff\xfe1\t101\t2\n")
    return argv


@_c("import-id-beyond-int64", "ent_ids_1:5", "does not fit in 64 bits")
def _(ctx):
    argv = _import(ctx)
    _lines(ctx.tmp / "src" / "ent_ids_1", [*LEFT, (2 ** 70, FR + "Trop_grand")])
    return argv


@_c("import-names-malformed-json", "names.json", "malformed JSON")
def _(ctx):
    (ctx.tmp / "names.json").write_text('[[0, ["paris"]], [1, ', encoding="utf-8")
    return _import(ctx, "--names", ctx.p("names.json"))


@_c("import-names-entry-not-a-name", "names.json", "entry 1 is not [id, [tokens]]")
def _(ctx):
    (ctx.tmp / "names.json").write_text('[[0, ["paris"]], [1, 5]]', encoding="utf-8")
    return _import(ctx, "--names", ctx.p("names.json"))


@_c("import-image-vector-nan", "img.pkl: key 2", "NaN")
def _(ctx):
    import pickle

    vec = {0: np.ones(4, np.float32), 2: np.array([1, np.nan, 0, 0], np.float32)}
    (ctx.tmp / "img.pkl").write_bytes(pickle.dumps(vec))
    return _import(ctx, "--image-features", ctx.p("img.pkl"))


@_c("import-empty-graph", "ent_ids_1", "empty graph")
def _(ctx):
    argv = _import(ctx)
    (ctx.tmp / "src" / "ent_ids_1").write_text("\n", encoding="utf-8")
    return argv


@_c("import-source-missing", "nowhere", "source folder does not exist")
def _(ctx):
    return ["psqe-ray", "-q", "import", "--format", "openea", ctx.p("nowhere"), ctx.p("ds")]


@_c("import-destination-holds-another-dataset", "already holds a different dataset")
def _(ctx):
    ctx.pair("ds")
    return _import(ctx)


@_c("import-destination-unrelated-files", "not empty and holds no psqe-ray dataset")
def _(ctx):
    (ctx.tmp / "ds").mkdir()
    (ctx.tmp / "ds" / "notes.txt").write_text("mine")
    return _import(ctx)


@_c("import-names-url-with-password-unreachable", "http://***@127.0.0.1", "names.json")
def _(ctx):
    url = f"http://psqe:{URL_PASSWORD}@127.0.0.1:{_refused_port()}/names.json"
    return _import(ctx, "--names", url)


@_c("import-s3-destination-unreachable", "s3://psqe-bucket/ds", "not accessible")
def _(ctx):
    ctx.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_refused_port()}"
    return ["psqe-ray", "-q", "import", "--format", "dbp15k", str(ctx.src()),
            "s3://psqe-bucket/ds"]


# inspect
@_c("inspect-missing-dataset", "absent", "no such dataset")
def _(ctx):
    return ["psqe-ray", "inspect", ctx.p("absent")]


@_c("inspect-corrupt-manifest", MANIFEST, "malformed manifest")
def _(ctx):
    url = ctx.pair()
    (Path(url) / MANIFEST).write_text("{not json")
    return ["psqe-ray", "inspect", url]


@_c("inspect-folder-without-manifest", "plain", "not a psqe-ray dataset")
def _(ctx):
    (ctx.tmp / "plain").mkdir()
    (ctx.tmp / "plain" / "x.parquet").write_bytes(b"")
    return ["psqe-ray", "inspect", ctx.p("plain")]


# seeds: the dataset, the output and what the output already holds
@_c("seeds-missing-dataset", "absent", "no such dataset")
def _(ctx):
    return ["psqe-ray", "-q", "seeds", ctx.p("absent"), ctx.p("out")]


@_c("seeds-output-inside-dataset", "pair/out", "the output lies inside the dataset")
def _(ctx):
    return ["psqe-ray", "-q", "seeds", ctx.pair(), ctx.p("pair/out")]


@_c("seeds-dataset-inside-output", "lies inside the output")
def _(ctx):
    ctx.pair("runs/pair")
    return ["psqe-ray", "-q", "seeds", ctx.p("runs/pair"), ctx.p("runs")]


@_c("seeds-output-is-the-dataset", "the output is the dataset itself")
def _(ctx):
    url = ctx.pair()
    return ["psqe-ray", "-q", "seeds", url, url]


@_c("seeds-output-from-another-code-version", "already holds a different dataset",
    "written by psqe-ray 0.4.2")
def _(ctx):
    out = ctx.seeds()
    _edit_manifest(out, code_version="0.4.2", fingerprint="0123456789abcdef")
    return ["psqe-ray", "-q", "seeds", ctx.pair(), out, *QUICK_SEEDS]


@_c("seeds-dataset-changed-after-commit", "already holds a different dataset",
    "its input dataset changed since")
def _(ctx):
    url, out = ctx.pair(), ctx.seeds()
    # a new table committed into the dataset after the seeds were: another fingerprint
    with DatasetWriter(url, stage="encode-extra", fingerprint="changed", update=True) as w:
        n = Dataset(url).entity_counts()
        for side in ("left", "right"):
            w.write("features/extra", pa.table({
                "side": [side] * n[side], "entity_id": np.arange(n[side]),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ones(2 * n[side], np.float32)), 2),
                "present": [True] * n[side]}))
        w.commit()
    return ["psqe-ray", "-q", "seeds", url, out, *QUICK_SEEDS]


@_c("seeds-output-locked-by-a-running-job", "another run is writing to this output",
    "out/_LOCK")
def _(ctx):
    _hold_lock(ctx, ctx.p("out"))
    return ["psqe-ray", "-q", "seeds", ctx.pair(), ctx.p("out"), *QUICK_SEEDS]


@_c("seeds-unknown-setting", "unknown configuration key 'stage9'")
def _(ctx):
    return ["psqe-ray", "-q", "seeds", ctx.pair(), ctx.p("out"), "--set", "stage9.x=1"]


@_c("seeds-setting-both-a-value-and-a-section", "seed.x: seed is set both as a value and as "
    "a section")
def _(ctx):
    return ["psqe-ray", "-q", "seeds", ctx.pair(), ctx.p("out"), "--set", "seed=1",
            "--set", "seed.x=2"]


@_c("seeds-config-file-missing", "nofile.yaml", "no such file")
def _(ctx):
    return ["psqe-ray", "-q", "seeds", ctx.pair(), ctx.p("out"), "--config", ctx.p("nofile.yaml")]


@_c("seeds-dataset-url-with-password", "http://***@127.0.0.1")
def _(ctx):
    url = f"http://psqe:{URL_PASSWORD}@127.0.0.1:{_refused_port()}/pair"
    return ["psqe-ray", "-q", "seeds", url, ctx.p("out")]


@_c("seeds-dataset-part-deleted", "/entities/part-", "no such file")
def _(ctx):
    url = ctx.pair()
    for part in (Path(url) / "entities").iterdir():
        part.unlink()
    return ["psqe-ray", "-q", "seeds", url, ctx.p("out"), *QUICK_SEEDS]


# align: the seeds it is given
@_c("align-missing-seeds", "nope", "no such file or folder")
def _(ctx):
    return ["psqe-ray", "-q", "align", ctx.pair(), ctx.p("nope"), ctx.p("out")]


@_c("align-seeds-not-parquet", "junk.parquet", "not a readable Parquet file")
def _(ctx):
    (ctx.tmp / "junk.parquet").write_bytes(b"not parquet at all")
    return ["psqe-ray", "-q", "align", ctx.pair(), ctx.p("junk.parquet"), ctx.p("out")]


@_c("align-seeds-missing-column", "bad-seeds.parquet", "missing column(s) ['right_id']")
def _(ctx):
    f = ctx.seeds_file({"left_id": [0, 1], "right": [0, 1]})
    return ["psqe-ray", "-q", "align", ctx.pair(), f, ctx.p("out")]


@_c("align-seeds-not-one-to-one", "bad-seeds.parquet", "duplicate right_id 3")
def _(ctx):
    f = ctx.seeds_file({"left_id": [0, 1, 2], "right_id": [3, 3, 4]})
    return ["psqe-ray", "-q", "align", ctx.pair(), f, ctx.p("out")]


@_c("align-seeds-id-beyond-int32", "bad-seeds.parquet",
    f"left_id {2 ** 40} is not a left entity")
def _(ctx):
    f = ctx.seeds_file({"left_id": pa.array([0, 2 ** 40], pa.int64()), "right_id": [0, 1]})
    return ["psqe-ray", "-q", "align", ctx.pair(), f, ctx.p("out")]


@_c("align-output-inside-dataset", "the output lies inside the dataset")
def _(ctx):
    url = ctx.pair()
    return ["psqe-ray", "-q", "align", url, ctx.seeds(), url + "/align"]


@_c("align-output-is-the-seeds", "the output is the seeds itself")
def _(ctx):
    out = ctx.seeds()
    return ["psqe-ray", "-q", "align", ctx.pair(), out, out]


@_c("align-unknown-recipe", "psqe-ray align", "invalid choice: 'gpt'")
def _(ctx):
    return ["psqe-ray", "-q", "align", ctx.pair(), ctx.seeds(), ctx.p("out"), "--recipe", "gpt"]


# run
@_c("run-missing-dataset", "absent", "no such dataset")
def _(ctx):
    return ["psqe-ray", "-q", "run", ctx.p("absent"), ctx.p("out")]


@_c("run-output-inside-dataset", "the output lies inside the dataset")
def _(ctx):
    url = ctx.pair()
    return ["psqe-ray", "-q", "run", url, url + "/run"]


@_c("run-output-from-another-code-version", "already holds a different dataset",
    "written by psqe-ray 0.4.2")
def _(ctx):
    out = ctx.seeds("run")
    _edit_manifest(out, code_version="0.4.2", fingerprint="0123456789abcdef", stage="run")
    return ["psqe-ray", "-q", "run", ctx.pair(), out, *QUICK_SEEDS]


@_c("run-setting-out-of-range", "align: dim, batch_size")
def _(ctx):
    return ["psqe-ray", "-q", "run", ctx.pair(), ctx.p("out"), "--set", "align.epochs=-1"]


@_c("run-unknown-option", "psqe-ray", "unrecognized arguments: --frobnicate")
def _(ctx):
    return ["psqe-ray", "-q", "run", ctx.pair(), ctx.p("out"), "--frobnicate"]


# encode: the model it is given
@_c("encode-model-directory-without-weights", "bert-no-weights",
    "model directory without weights")
def _(ctx):
    model = ctx.tmp / "bert-no-weights"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (model / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    return ["psqe-ray", "-q", "encode", ctx.pair(), "--modality", "name", "--model", str(model)]


@_c("encode-model-directory-missing", "no-model", "no such directory")
def _(ctx):
    return ["psqe-ray", "-q", "encode", ctx.pair(), "--modality", "name", "--model",
            ctx.p("no-model")]


@_c("encode-missing-dataset", "absent", "no such dataset")
def _(ctx):
    return ["psqe-ray", "-q", "encode", ctx.p("absent"), "--modality", "image", "--model",
            "resnet18"]


# the Ray jobs (jobs/*.py): the same checks before Ray starts, and one error from inside it
@_c("job-seeds-output-inside-dataset", "the output lies inside the dataset")
def _(ctx):
    url = ctx.pair()
    return ["jobs/seeds.py", "-q", url, url + "/seeds"]


@_c("job-align-missing-seeds", "nope", "no such file or folder")
def _(ctx):
    return ["jobs/align.py", "-q", ctx.pair(), ctx.p("nope"), ctx.p("out")]


@_c("job-run-missing-dataset", "absent", "no such dataset")
def _(ctx):
    return ["jobs/run.py", "-q", ctx.p("absent"), ctx.p("out")]


@_c("job-run-output-locked", "another run is writing to this output")
def _(ctx):
    _hold_lock(ctx, ctx.p("out"))
    return ["jobs/run.py", "-q", ctx.pair(), ctx.p("out"), *QUICK_SEEDS]


@_c("job-seeds-feature-part-deleted-read-by-a-ray-task", "/features/image/part-",
    "no such file")
def _(ctx):
    url = ctx.pair()
    for part in (Path(url) / "features" / "image").iterdir():
        part.unlink()
    return ["jobs/seeds.py", "-q", url, ctx.p("out"), *QUICK_SEEDS]


def test_the_matrix_has_at_least_40_cases():
    ids = [c.id for c in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    entries = {c.id.split("-")[0] for c in CASES}
    assert entries >= {"import", "inspect", "seeds", "align", "run", "encode", "job"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, base, tmp_path):
    ctx = Ctx(tmp_path, base)
    try:
        argv = case.setup(ctx)
        before = _tree(tmp_path)
        proc = subprocess.run(_command(argv), capture_output=True, text=True, cwd=ROOT,
                              env=_env(**ctx.env), timeout=240)
    finally:
        for h in ctx.holders:
            h.kill()
            h.wait()
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 2, (proc.returncode, out[-2000:], err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    if argv[0] == "psqe-ray":  # our command prints nothing else (jobs: Ray may log)
        assert lines == errors and out == "", (out, err)
    line = errors[0]
    for text in case.expect:
        assert text in line, (text, line)
    # nothing committed, nothing left behind: the folder is exactly as the setup made it
    after = _tree(tmp_path)
    assert after == before, sorted(set(after) ^ set(before)) or [
        k for k in after if after[k] != before[k]]
    # no credential anywhere: not printed, not in any file
    for secret in SECRETS:
        assert secret not in out and secret not in err, secret
        for rel, data in after.items():
            assert data is None or secret.encode() not in data, (secret, rel)


# -- valid but unusual input: accepted ---------------------------------------------------------

def test_unusual_but_valid_input_is_accepted(tmp_path):
    """Unicode names, an empty name, self-loops, a duplicated triple and raw ids beyond int32
    import and run; the duplicate is dropped and counted, self-loops kept and counted, the
    empty name read as no name (the URI's name instead)."""
    big = 2 ** 40
    left = [(big + 0, FR + "東京"), (big + 1, FR + "Zürich"), (big + 2, FR + "القاهرة"),
            (big + 3, FR + "🙂_smile"), (big + 4, FR + "Nantes")]
    right = [(7, EN + "Tokyo"), (2 ** 33, EN + "Zurich"), (9, EN + "Cairo"), (10, EN + "Smile"),
             (11, EN + "Nantes")]
    triples = {1: [(big, 100, big + 1), (big, 100, big + 1), (big + 2, 101, big + 2),
                   (big + 3, 100, big + 4), (big + 1, 101, big + 3)],
               2: [(7, 100, 2 ** 33), (9, 101, 9), (10, 100, 11), (2 ** 33, 101, 10)]}
    src = layout(tmp_path / "src", left, right, triples)
    names = [[big + 4, []], [11, ["  "]], [big, ["東京", "都"]]]
    (tmp_path / "names.json").write_text(json.dumps(names, ensure_ascii=False), encoding="utf-8")
    ds = tmp_path / "ds"
    proc = subprocess.run(_command(["psqe-ray", "-q", "import", "--format", "dbp15k", str(src),
                                    str(ds), "--names", str(tmp_path / "names.json")]),
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    d = Dataset(str(ds), validate=True)
    assert d.manifest["meta"]["triples"] == {
        "left": {"duplicates_dropped": 1, "self_loops": 1},
        "right": {"duplicates_dropped": 0, "self_loops": 1}}
    assert d.counts("triples") == {"left": 4, "right": 4}
    names_of = {r["uri"]: r["name"] for r in d.table("entities").to_pylist()}
    assert names_of[FR + "東京"] == "東京 都"                 # from the names JSON
    assert names_of[FR + "القاهرة"] == "القاهرة"              # from the URI
    assert names_of[FR + "🙂_smile"] == "🙂 smile"
    assert names_of[FR + "Nantes"] == "Nantes"  # empty name in the JSON: the URI's name
    assert names_of[EN + "Nantes"] == "Nantes"  # blank name: the same
    tri = d.table("triples", side="left")
    assert (tri.column("head").to_numpy() == tri.column("tail").to_numpy()).sum() == 1
    ids = sorted(d.table("entities", side="right").column("entity_id").to_pylist())
    assert ids == list(range(5))  # raw ids beyond int32 become dense ids
    out = tmp_path / "seeds"
    proc = subprocess.run(_command(["psqe-ray", "-q", "seeds", str(ds), str(out), "--method",
                                    "uvp", "--set", "stage1.budget=3"]),
                          capture_output=True, text=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"]["count"] >= 1 and report["entities"] == {"left": 5, "right": 5}


def test_empty_and_blank_names_are_absent_in_the_features(tmp_path):
    """The rule the README states: an empty or blank name is no name (present=False)."""
    from psqe_ray.core.features import name_rows

    _, present = name_rows(["Paris", "", "   ", None, "東京"], 64, 2, 3)
    assert present.tolist() == [True, False, False, False, True]


# -- two runs on one output ---------------------------------------------------------------

def test_two_runs_on_one_output_one_wins_the_other_is_refused(base, tmp_path):
    """Two runs with different settings started together on one output: the one that takes
    the output's lock first completes, the other is refused with one line naming the lock
    while the first still runs, and the output is the winner's alone."""
    pair = shutil.copytree(base["pair"], tmp_path / "pair")
    out = tmp_path / "out"
    runs = {seed: subprocess.Popen(
        _command(["psqe-ray", "-q", "seeds", str(pair), str(out), "--seed", str(seed), "--set",
                  "stage2.epochs=150", "--set", "stage1.budget=40"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for seed in (1, 2)}
    try:
        deadline = time.monotonic() + 240
        while all(p.poll() is None for p in runs.values()):
            assert time.monotonic() < deadline, "neither run ended"
            time.sleep(0.05)
        first = next(s for s, p in runs.items() if p.poll() is not None)
        other = 3 - first
        other_running = runs[other].poll() is None
        results = {s: p.communicate(timeout=300) for s, p in runs.items()}
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
    loser, winner = first, other
    assert other_running, "both ended at once: the test proved nothing (raise epochs)"
    assert runs[loser].returncode == 2, results[loser]
    l_out, l_err = results[loser]
    assert l_out == "" and l_err.splitlines() == [l_err.strip()], results[loser]
    assert l_err.startswith(f"error: {out}: another run is writing to this output (lock "
                            f"{out}/_LOCK held by pid {runs[winner].pid} "), l_err
    assert runs[winner].returncode == 0, results[winner]
    # the winner's output, whole: its manifest, its report, no file of the loser's, no lock
    ds = Dataset(str(out), validate=True)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["seed"] == winner
    listed = {MANIFEST, "seeds.parquet", "report.json"}
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == listed
    assert ds.manifest["inputs"] == {"dataset": Dataset(str(pair)).manifest["fingerprint"]}


def test_local_lock_taken_over_after_the_holder_is_killed(tmp_path):
    """flock dies with its process: a SIGKILLed run never leaves a stale local lock."""
    import fsspec

    from psqe_ray.errors import DestinationError
    from psqe_ray.io.lock import OutputLock

    ctx = Ctx(tmp_path, {})
    out = str(tmp_path / "out")
    _hold_lock(ctx, out)
    fs = fsspec.filesystem("file")
    with pytest.raises(DestinationError, match="another run is writing"):
        OutputLock(fs, out, out).acquire()
    ctx.holders[0].kill()
    ctx.holders[0].wait()
    assert os.path.exists(os.path.join(out, "_LOCK"))  # left behind by the killed holder
    lock = OutputLock(fs, out, out).acquire()
    lock.release()
    assert not os.path.exists(os.path.join(out, "_LOCK"))


def test_object_store_lock_is_a_conditional_create(s3_bucket):
    """On S3 (moto's server) the second of two writers is refused, and after the first
    releases, the output can be locked again; a stale lock of a dead local process is taken
    over."""
    import s3fs

    from psqe_ray.errors import DestinationError
    from psqe_ray.io.lock import OutputLock

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = s3_bucket.removeprefix("s3://") + "/out"
    first = OutputLock(fs, root, f"{s3_bucket}/out").acquire()
    with pytest.raises(DestinationError, match=f"lock {s3_bucket}/out/_LOCK held by pid "
                                               f"{os.getpid()}"):
        OutputLock(fs, root, f"{s3_bucket}/out").acquire()
    first.release()
    assert not fs.exists(root + "/_LOCK")
    again = OutputLock(fs, root, f"{s3_bucket}/out").acquire()
    # a lock whose process is gone (same host): taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    raw = json.loads(fs.cat_file(root + "/_LOCK"))
    fs.pipe_file(root + "/_LOCK", json.dumps({**raw, "pid": int(dead)}).encode())
    taker = OutputLock(fs, root, f"{s3_bucket}/out").acquire()
    assert json.loads(fs.cat_file(root + "/_LOCK"))["token"] == taker.token
    taker.release()
    again.release()  # not its lock any more: leaves nothing to remove, raises nothing


# -- stages committed by another code version, or for another dataset --------------------------

def test_stages_of_another_code_version_or_dataset_are_recomputed(tmp_path, caplog):
    """The Ray seed job's committed stages are named by the dataset's fingerprint, the
    settings and the code version: a stage committed under another version, or for a
    dataset that changed since, is not reused (logged, then recomputed); the same one is."""
    import logging

    import psqe_ray.distributed.psqe as dpsqe
    from psqe_ray.config import load_config

    cfg = load_config(None, [])
    out = str(tmp_path / "out")

    def commit_stage(gen) -> None:
        with gen._writer("features") as w:
            w.write("gold", pa.table({"left_id": [0], "right_id": [0]}))
            w.commit()

    gen = dpsqe.RaySeedGenerator(cfg, out, "dataset-fp-1")
    gen._counts = {"left": 3, "right": 3}
    commit_stage(gen)
    assert dpsqe.RaySeedGenerator(cfg, out, "dataset-fp-1")._committed("features") is not None
    with caplog.at_level(logging.INFO, logger="psqe_ray"):
        assert dpsqe.RaySeedGenerator(cfg, out, "dataset-fp-2")._committed("features") is None
    assert "committed by another run" in caplog.text
    # the same stage as an older code version committed it: its fingerprint names that version
    from psqe_ray.config import fingerprint, seed_settings
    settings = seed_settings(cfg)
    settings["distributed"] = {k: v for k, v in settings["distributed"].items()
                               if k not in dpsqe._NEUTRAL}

    def stage_fp(code: str) -> str:
        return fingerprint({"run": fingerprint({"dataset": "dataset-fp-1", "config": settings,
                                                "code": code}), "stage": "features"})

    manifest = tmp_path / "out" / dpsqe.STAGES / "features" / MANIFEST
    doc = json.loads(manifest.read_text())
    assert doc["fingerprint"] == stage_fp(dpsqe.__version__)  # the recipe is the real one
    doc["fingerprint"] = stage_fp("0.0.1-other")
    manifest.write_text(json.dumps(doc))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="psqe_ray"):
        assert dpsqe.RaySeedGenerator(cfg, out, "dataset-fp-1")._committed("features") is None
    assert "committed by another run" in caplog.text


# -- an image URL that hangs ----------------------------------------------------------------

@pytest.fixture
def hanging_url():
    """An http URL whose server accepts connections and never answers."""
    from psqe_ray.testing.outage import silent_server

    with silent_server("/images/cat.png") as url:
        yield url


def test_an_image_url_that_hangs_is_counted_unreadable_within_the_timeout(
        hanging_url, tiny_resnet_file, tmp_path):
    """The documented rule for unreadable images (counted, flagged absent, the job goes on)
    holds for a server that never answers: after ``encode.image_timeout`` seconds."""
    from PIL import Image

    from psqe_ray.config import load_config
    from psqe_ray.encoders.image import ImageEncoder

    good = tmp_path / "ok.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(good)
    timeout = load_config(None, ["encode.image_timeout=1.5"]).encode.image_timeout
    assert timeout == 1.5
    enc = ImageEncoder("resnet18", tiny_resnet_file, image_size=32, device="cpu",
                       io_threads=2, timeout=timeout)
    t = time.monotonic()
    _, present, errors = enc.encode_paths([hanging_url, str(good)])
    took = time.monotonic() - t
    assert present.tolist() == [False, True]
    assert errors[0].startswith(hanging_url + ": ") and errors[1] is None
    assert took < 15, took  # aiohttp's own default would wait 300 s
    with pytest.raises(Exception, match="image_timeout must be > 0"):
        load_config(None, ["encode.image_timeout=0"]).check()
    # the pass-through into the Ray Data encoder: tests/distributed/test_encode.py::
    # test_a_hanging_image_url_counts_as_unreadable_after_the_timeout


# -- credentials in a URL that works: never written ------------------------------------------

class _AuthHandler(http.server.SimpleHTTPRequestHandler):
    expected = ""

    def do_GET(self):  # noqa: N802
        if self.headers.get("Authorization") != self.expected:
            self.send_error(401)
            return
        super().do_GET()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_credentials_in_urls_and_environment_are_never_written(tmp_path, base):
    """A dataset read over http with ``user:password`` in its URL, with AWS keys in the
    environment: the run works and no secret is printed, logged, or written into report.json
    or any manifest."""
    serve = tmp_path / "served"
    shutil.copytree(base["pair"], serve / "pair")
    layout(serve / "src")
    (serve / "names.json").write_text('[[0, ["paris"]]]', encoding="utf-8")
    handler = functools.partial(type("H", (_AuthHandler,), {
        "expected": "Basic " + base64.b64encode(f"psqe:{URL_PASSWORD}".encode()).decode()}),
        directory=str(serve))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://psqe:{URL_PASSWORD}@127.0.0.1:{httpd.server_address[1]}"
    try:
        imp = subprocess.run(_command(["psqe-ray", "import", "--format", "dbp15k",
                                       str(serve / "src"), str(tmp_path / "ds"), "--names",
                                       f"{url}/names.json"]),
                             capture_output=True, text=True, env=_env(), timeout=120)
        seeds = subprocess.run(_command(["psqe-ray", "seeds", f"{url}/pair",
                                         str(tmp_path / "seeds"), *QUICK_SEEDS]),
                               capture_output=True, text=True, env=_env(), timeout=180)
        info = subprocess.run(_command(["psqe-ray", "inspect", f"{url}/pair", "--json"]),
                              capture_output=True, text=True, env=_env(), timeout=120)
    finally:
        httpd.shutdown()
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["url"].startswith("http://***@127.0.0.1:")
    assert imp.returncode == 0, imp.stderr
    assert seeds.returncode == 0, seeds.stderr
    manifest = json.loads((tmp_path / "ds" / MANIFEST).read_text())
    assert manifest["meta"]["names"].startswith("http://***@127.0.0.1:")
    report = json.loads((tmp_path / "seeds" / "report.json").read_text())
    assert report["dataset"].startswith("http://***@127.0.0.1:")
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "served" not in p.parts]
    assert any(p.name == MANIFEST for p in files) and any(p.name == "report.json" for p in files)
    for secret in SECRETS:
        for proc in (imp, seeds, info):
            assert secret not in proc.stdout and secret not in proc.stderr, secret
        for p in files:
            assert secret.encode() not in p.read_bytes(), (secret, p)


def test_redact_removes_userinfo_and_environment_secrets(monkeypatch):
    from psqe_ray.io.fs import redact

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    text = (f"s3://KEY:{URL_PASSWORD}@bucket/x and https://tok@h/p, "
            f"secret {FAKE_SECRET}, plain /a@b and user@example.org")
    assert redact(text) == ("s3://***@bucket/x and https://***@h/p, secret ***, plain /a@b "
                            "and user@example.org")
