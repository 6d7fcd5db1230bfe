"""Committed row blocks: a dense block and a CSR block come back from their Parquet parts
exactly as they were written (no Ray needed: the writer and reader are plain functions)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from psqe_ray.distributed.blocks import _block_of, _write


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
