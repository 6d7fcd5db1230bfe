"""Import rules of DESIGN.md: core/ imports neither ray nor fsspec; only distributed/ imports ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "psqe_ray"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_core_imports_no_ray_or_fsspec():
    files = list((PKG / "core").rglob("*.py"))
    assert files, "psqe_ray/core must exist"
    for f in files:
        bad = _imports(f) & {"ray", "fsspec", "s3fs", "gcsfs"}
        assert not bad, f"{f} imports {bad}"


def test_only_distributed_imports_ray():
    for f in PKG.rglob("*.py"):
        if "distributed" in f.relative_to(PKG).parts:
            continue
        assert "ray" not in _imports(f), f"{f} imports ray"


def test_layer_rule_detects_violations(tmp_path):
    probe = tmp_path / "x.py"
    probe.write_text("import ray.data\nfrom fsspec import core\n")
    assert _imports(probe) >= {"ray", "fsspec"}


def test_align_imports_only_core_and_config():
    """align/ sits between core/ and distributed/: no Ray, no storage, no jobs."""
    files = list((PKG / "align").rglob("*.py"))
    assert files
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f))
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        inner = {m for m in mods if m.startswith("psqe_ray.")}
        bad = {m for m in inner if not m.startswith(("psqe_ray.core", "psqe_ray.config",
                                                     "psqe_ray.align"))}
        assert not bad and not _imports(f) & {"ray", "fsspec", "s3fs"}, f"{f}: {bad}"


def test_torch_geometric_loads_only_when_a_model_is_built():
    """Importing the runners and the Ray engine must not import torch_geometric (seconds of
    imports a bad-input error or a search task should not pay); building a GAT layer does."""
    code = ("import sys, psqe_ray.runners, psqe_ray.distributed.engine, psqe_ray.align.trainer\n"
            "assert 'torch_geometric' not in sys.modules, 'loaded at import'\n"
            "from psqe_ray.core.kernels import gat_conv\n"
            "conv = gat_conv(4, 4)\n"
            "assert type(conv).__module__.startswith('torch_geometric'), type(conv)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
