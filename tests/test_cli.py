"""The psqe-ray command line: synth -> inspect, JSON output, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from psqe_ray.cli import main


def test_synth_then_inspect_json(tmp_path, capsys):
    url = str(tmp_path / "pair")
    assert main(["-q", "synth", url, "--entities", "300", "--seed", "5",
                 "--feature", "image:16:0.5:0.2", "--feature", "text:8:0.1:0"]) == 0
    capsys.readouterr()
    assert main(["inspect", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entities"] == {"left": 300, "right": 300}
    assert info["gold"] == 240
    assert set(info["triples"]) == {"left", "right"} and info["triples"]["left"] > 0
    assert info["modalities"]["image"]["left"] <= 300
    assert info["modalities"]["text"] == {"left": 300, "right": 300}
    assert info["dims"] == {"image": 16, "text": 8}
    assert info["validation"] == {"ok": True, "problems": []}
    assert main(["inspect", url]) == 0
    text = capsys.readouterr().out
    assert "validation: ok" in text and "entities" in text


def test_inspect_reports_invalid_dataset(tmp_path, capsys):
    url = tmp_path / "pair"
    assert main(["-q", "synth", str(url), "--entities", "100", "--image-files", "0"]) == 0
    manifest = json.loads((url / "_MANIFEST.json").read_text())
    part = url / manifest["tables"]["gold"]["parts"][0]
    table = pq.read_table(part)
    bad = table.set_column(0, "left_id", pa.array([10_000] * table.num_rows, pa.int64()))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), part)
    capsys.readouterr()
    assert main(["inspect", str(url), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert not info["validation"]["ok"]
    assert "gold [left_id]: reference to unknown left entities: id 10000" in \
        info["validation"]["problems"][0]


def test_missing_dataset_is_one_line_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "no such dataset" in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "psqe_ray.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("psqe-ray ")
