"""PSQE and UVP on a real pair (../shared/data): the in-process path runs end to end.

Quality figures live in BENCHMARKS.md (benchmarks/seeds_real.py); this test checks that the path
works on real data and that seeds are far better than chance, with short training for CI time.
"""

from __future__ import annotations

import json

import pytest

from psqe_ray.cli import main
from psqe_ray.io.importers import import_pair


@pytest.fixture(scope="module")
def openea(shared_data, tmp_path_factory):
    url = str(tmp_path_factory.mktemp("real") / "oea")
    import_pair("openea", str(shared_data / "OpenEA15K/OEA_EN_FR_15K_V1"), url)
    return url


def test_uvp_and_short_psqe_on_openea(openea, tmp_path, capsys):
    assert main(["-q", "seeds", openea, str(tmp_path / "uvp"), "--method", "uvp"]) == 0
    uvp = json.loads((tmp_path / "uvp" / "report.json").read_text())
    assert uvp["seeds"]["count"] == 1000 and uvp["pivot"] == "name"
    # chance precision is 1 / 15,000
    assert uvp["seeds"]["precision"] > 0.5
    assert main(["-q", "seeds", openea, str(tmp_path / "psqe"), "--set", "stage2.epochs=3",
                 "--modalities", "relation,attribute"]) == 0
    psqe = json.loads((tmp_path / "psqe" / "report.json").read_text())
    assert psqe["modalities"] == ["attribute", "relation"]
    assert psqe["stages"][-1]["name"] == "stage3-recheck"
    assert psqe["seeds"]["precision"] > 0.05
    capsys.readouterr()
