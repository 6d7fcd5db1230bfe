"""Committed row blocks: a dense block and a CSR block come back from their Parquet parts
exactly as they were written, and a streamed writer cuts arriving rows into the blocks (no Ray
needed: the writers and the reader are plain functions)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from psqe_ray.distributed.blocks import BlockSink, _block_of, _write, write_blocks


def _roundtrip(tmp_path, x):
    url = str(tmp_path / "blocks" / "left-00000.parquet")
    size = _write(url, "left", 128, x, None)
    t = pq.read_table(io.BytesIO(open(url, "rb").read()))
    assert size == (tmp_path / "blocks" / "left-00000.parquet").stat().st_size
    assert t.column("entity_id").to_pylist() == list(range(128, 128 + x.shape[0]))
    return t, _block_of(t)


def test_csr_block_roundtrip_is_exact_and_stays_sparse(tmp_path):
    rng = np.random.default_rng(0)
    x = sp.random(50, 3000, density=0.01, format="lil", dtype=np.float32, random_state=1)
    x[7] = 0  # an empty row
    x = x.tocsr()
    t, back = _roundtrip(tmp_path, x)
    assert "indices" in t.column_names and "vector" not in t.column_names
    assert sp.issparse(back) and back.shape == (50, 3000) and back.dtype == np.float32
    assert np.array_equal(back.toarray(), x.toarray())
    d = rng.standard_normal((9, 5)).astype(np.float32)
    t, back = _roundtrip(tmp_path, d)
    assert "vector" in t.column_names and np.array_equal(back, d)


def test_block_sink_writes_each_block_once_complete(tmp_path):
    """Rows arriving in runs of any length (left, then right) become the blocks of the bounds,
    each written as soon as it is complete; the entry lists them like write_blocks."""
    rng = np.random.default_rng(2)
    left, right = (rng.standard_normal((n, 3)).astype(np.float32) for n in (10, 7))
    bounds = {"left": [(0, 4), (4, 8), (8, 10)], "right": [(0, 4), (4, 7)]}
    sink = BlockSink(str(tmp_path), "learned", bounds, None)
    both = np.concatenate([left, right])
    written = []
    for a, b in ((0, 3), (3, 3), (3, 9), (9, 15), (15, 17)):
        sink.add(both[a:b])
        written.append(len(list((tmp_path / "learned").glob("*.parquet"))))
    assert written == [0, 0, 2, 4, 5]  # a block goes out once its last row arrived
    entry = sink.entry()
    assert entry == write_blocks(str(tmp_path / "whole"), "learned", left, right, bounds, None)
    assert entry["dim"] == 3
    assert [[a, b] for a, b, _ in entry["right"]] == [[0, 4], [4, 7]]
    for side, x in (("left", left), ("right", right)):
        for a, b, rel in entry[side]:
            t = pq.read_table(tmp_path / rel)
            assert np.array_equal(_block_of(t), x[a:b])
            assert t.column("entity_id").to_pylist() == list(range(a, b))
    short = BlockSink(str(tmp_path / "short"), "x", bounds, None)
    short.add(both[:12])
    with pytest.raises(ValueError, match="not complete"):
        short.entry()
