"""Progress on the driver for the Ray path's counted work: rows encoded by the Ray Data pool,
search shards done by ``topk_shard`` tasks (``runtime.get_all``)."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest
import ray

from psqe_ray.config import EncodeConfig, load_config
from psqe_ray.core.blocks import row_ranges
from psqe_ray.core.progress import Progress
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.distributed.blocks import put_sharded
from psqe_ray.distributed.encode import encode_modality
from psqe_ray.distributed.psqe import RaySeedGenerator
from psqe_ray.distributed.runtime import get_all
from psqe_ray.io.dataset import Dataset
from psqe_ray.testing.synth import SynthConfig, synthesize

pytestmark = pytest.mark.usefixtures("ray_local", "ray_timeout")


def _progress(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "psqe_ray.progress"]


def test_encoded_rows_reach_the_driver_log_and_no_error_line(tmp_path, tiny_bert_dir, caplog,
                                                             capfd):
    url = str(tmp_path / "pair")
    synthesize(url, SynthConfig(entities=150, seed=3))
    names = Dataset(url).table("entities").column("name").to_pylist()
    texts = len({n for n in names if n and n.strip()})
    with caplog.at_level(logging.INFO, logger="psqe_ray"):
        res = encode_modality(url, "name", EncodeConfig(name_model=tiny_bert_dir,
                                                        text_batch_size=16, workers=1))
    assert res.units == texts
    lines = [m for m in _progress(caplog) if m.startswith("encode name texts: ")]
    assert lines and lines[-1].startswith(f"encode name texts: {texts} of {texts} rows (100%), ")
    assert re.search(r"rows/s, \d+:\d\d in all$", lines[-1])
    for m in lines:
        done = int(re.match(r"encode name texts: ([\d,]+) of ", m).group(1).replace(",", ""))
        assert 0 < done <= texts
    # the pool's actors are made without restarts: Ray's core worker (C++, on this process's
    # stderr) logs no error line about their constructor arguments in the object store
    err = capfd.readouterr().err
    assert "constructor arguments in the object store" not in err
    assert not [l for l in err.splitlines() if " E " in l or "ERROR" in l], err[-2000:]


def test_search_shards_done_reach_the_driver_log(tmp_path, caplog):
    rng = np.random.default_rng(3)
    left = rng.standard_normal((900, 16)).astype(np.float32)
    right = rng.standard_normal((700, 16)).astype(np.float32)
    cfg = load_config(None, ["distributed.shards=3"])  # an exact plan in three shard tasks
    local = SeedGenerator(cfg)._global_topk(left, right, 5)
    gen = RaySeedGenerator(cfg, str(tmp_path / "out"), "fp")
    gen._current = "stage2-global"
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        got = gen._global_topk(put_sharded(left, row_ranges(900, 300, 100)),
                               put_sharded(right, row_ranges(700, 300, 100)), 5)
    for a, b in zip(local, got):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    lines = _progress(caplog)
    for direction in ("left->right", "right->left"):
        mine = [m for m in lines if m.startswith(f"stage2-global top-k {direction}: ")]
        assert mine[0].startswith(f"stage2-global top-k {direction}: 1 of 3 shards (33%), ")
        assert mine[-1].startswith(f"stage2-global top-k {direction}: 3 of 3 shards (100%), ")
    # the aligner's searches (any other stage) are labelled with their stage
    gen._current = "align"
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        gen._search(put_sharded(left, row_ranges(900, 300, 100)),
                    put_sharded(right, row_ranges(700, 300, 100)), 5)
    assert _progress(caplog)[-1].startswith("align search: 3 of 3 shards (100%), ")


def test_get_all_keeps_the_order_of_the_refs_and_counts_each_task(caplog):
    @ray.remote(num_cpus=0.5)
    def late(i: int, n: int) -> int:
        time.sleep(0.2 * (n - i))  # the last one ends first
        return i * 10

    clock = iter(range(1000))
    shown = Progress("test tasks", 4, "tasks", every=0.0, clock=lambda: float(next(clock)))
    with caplog.at_level(logging.INFO, logger="psqe_ray.progress"):
        got = get_all([late.remote(i, 4) for i in range(4)], shown)
    assert got == [0, 10, 20, 30]
    assert [m.split(" (")[0] for m in _progress(caplog)] == [
        f"test tasks: {i} of 4 tasks" for i in range(1, 5)]

    @ray.remote(num_cpus=0.5, max_retries=0)
    def fails(i: int) -> int:
        if i == 1:
            raise ValueError("shard 1 broke")
        time.sleep(0.5)
        return i

    with pytest.raises(ValueError, match="shard 1 broke"):
        get_all([fails.remote(i) for i in range(3)])
