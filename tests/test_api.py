"""The Python API (psqe_ray.api): the README's example as written, and its errors."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import psqe_ray as pr
from psqe_ray.errors import ConfigError, DataError

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no api-example block"
    return m.group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), "README.md api-example", "exec"), scope)
    printed = out.getvalue().splitlines()
    assert len(printed) == 4, printed
    metrics, report = scope["metrics"], scope["report"]
    assert report["seeds"]["count"] > 0 and metrics["hits@1"] > 0.5
    assert (tmp_path / "api-out" / "align" / "matches.parquet").exists()
    # evaluate_pairs of the matches gives the figures the aligner reported for them
    got = pr.evaluate_pairs("api-data", "api-out/align/matches.parquet")
    m = metrics["matching"]
    assert (got["precision"], got["recall"], got["f1"]) == (m["precision"], m["recall"], m["f1"])
    pair = scope["pair"]
    assert pair.left.n == 600 and len(pair.gold[0]) == metrics["gold"]
    # a pairs table in memory: the gold links themselves are all correct
    gold = pa.table({"left_id": pair.gold[0], "right_id": pair.gold[1]})
    perfect = pr.evaluate_pairs("api-data", gold)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0


def test_settings_and_inputs_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown configuration key stage2\.'epoch'"):
        pr.make_config({"stage2.epoch": 3})
    with pytest.raises(ConfigError, match="align.recipe"):
        pr.make_config({"align.recipe": "nope"})
    assert pr.make_config({"align.fanout": [4, 2]}).align.fanout == (4, 2)
    assert pr.make_config(yaml="seed: 7\n", settings={"threads": 2}).seed == 7
    data = str(tmp_path / "d")
    pr.synthesize(data, entities=200)
    with pytest.raises(ConfigError, match="engine"):
        pr.generate_seeds(data, str(tmp_path / "o"), engine="spark")
    with pytest.raises(ConfigError, match="synthesis setting"):
        pr.synthesize(str(tmp_path / "e"), entitys=10)
    with pytest.raises(DataError, match="missing column"):
        pr.evaluate_pairs(data, pa.table({"left": [0]}))
    with pytest.raises(DataError, match="not a right entity"):
        pr.evaluate_pairs(data, pa.table({"left_id": [0], "right_id": [10 ** 6]}))
    with pytest.raises(DataError, match="no such file"):
        pr.evaluate_pairs(data, str(tmp_path / "missing.parquet"))
    assert not (tmp_path / "o").exists()


def test_import_psqe_ray_stays_light():
    """The API loads on first use: importing the package pulls in neither torch nor Ray."""
    code = ("import sys, psqe_ray; assert callable(psqe_ray.make_config); "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    light = subprocess.run([sys.executable, "-c", "import sys, psqe_ray; "
                            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"
    used = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ray" not in used.stdout
    with pytest.raises(AttributeError):
        pr.no_such_function  # noqa: B018
