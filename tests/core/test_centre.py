"""A text model's vectors lose their graph's mean before normalising (features.centre_text)."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.config import load_config
from psqe_ray.core.blocks import (CHUNK, Prep, centred_stats, chunk_stats, fill_stats,
                                  prepare_rows, side_means)
from psqe_ray.core.fusion import l2_normalize
from psqe_ray.core.graph import KGPair, KGSide
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.topk import topk_search


def _rows(rng, n: int, d: int, missing: float = 0.2):
    x = (rng.standard_normal((n, d)) + 3.0).astype(np.float32)
    present = rng.random(n) > missing
    x[~present] = 0
    return x, present


def test_side_means_are_the_present_rows_means_for_any_block_cut():
    rng = np.random.default_rng(0)
    chunk = 16
    x, present = _rows(rng, 100, 5)
    y, present_y = _rows(rng, 70, 5)
    whole = side_means({"left": [chunk_stats(x, present, 0, chunk)],
                        "right": [chunk_stats(y, present_y, 0, chunk)]})
    cut = side_means({"left": [chunk_stats(x[a:a + 32], present[a:a + 32], a, chunk)
                               for a in range(0, 100, 32)],
                      "right": [chunk_stats(y, present_y, 0, chunk)]})
    for s in ("left", "right"):
        assert np.array_equal(whole[s], cut[s])  # bit for bit: summed chunk by chunk
    np.testing.assert_allclose(whole["left"], x[present].mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole["right"], y[present_y].mean(0), rtol=1e-6)
    none = np.zeros(30, bool)
    assert side_means({"left": [chunk_stats(x[:30], none, 0, chunk)],
                       "right": [chunk_stats(y, present_y, 0, chunk)]}) is None


def test_centred_stats_are_the_stats_of_the_centred_rows():
    rng = np.random.default_rng(1)
    x, present = _rows(rng, 80, 6)
    mean = x[present].mean(0).astype(np.float32)
    direct = chunk_stats(np.where(present[:, None], x - mean, 0), present, 0, 16)
    np.testing.assert_allclose(centred_stats(chunk_stats(x, present, 0, 16), mean), direct,
                               rtol=1e-6, atol=1e-6)
    mean_f, std_f = fill_stats([centred_stats(chunk_stats(x, present, 0, 16), mean)])
    np.testing.assert_allclose(mean_f, 0, atol=1e-5)
    np.testing.assert_allclose(std_f, x[present].std(0), rtol=1e-5)


def test_prepare_rows_centres_present_rows_only():
    rng = np.random.default_rng(2)
    x, present = _rows(rng, 50, 4)
    mean = x[present].mean(0).astype(np.float32)
    got = prepare_rows(x, present, 0, None, 0, "name", "left", CHUNK, mean)
    np.testing.assert_allclose(got[present], l2_normalize(x[present] - mean), rtol=1e-6)
    assert not got[~present].any()  # no fill: absent rows stay zero, not -mean
    filled = Prep((np.zeros(4, np.float32), np.ones(4, np.float32)), {"left": mean}).rows(
        x, present, 0, 0, "name", "left")
    np.testing.assert_array_equal(filled[present], got[present])
    assert np.all(np.abs(np.linalg.norm(filled[~present], axis=1) - 1) < 1e-5)


def _cone_pair(n: int = 300, d: int = 32, seed: int = 0) -> KGPair:
    """Name vectors as a sentence encoder makes them: a large direction every text shares, an
    offset of each graph's own (its language), and a small part that tells entities apart
    (entity i of the left graph is entity i of the right graph)."""
    rng = np.random.default_rng(seed)
    common = 12.0 * l2_normalize(rng.standard_normal((1, d)))
    own = rng.standard_normal((n, d))
    sides = []
    for _ in range(2):
        offset = 20.0 * l2_normalize(rng.standard_normal((1, d)))
        x = (common + offset + own + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
        chain = np.arange(n - 1)
        sides.append(KGSide(n=n, heads=chain, relations=np.zeros(n - 1, np.int64),
                            tails=chain + 1, features={"name": (x, np.ones(n, bool))}))
    return KGPair(*sides)


def _name_hits(centre: bool) -> tuple[float, SeedGenerator]:
    cfg = load_config(None, [f"features.centre_text={str(centre).lower()}",
                             "features.signal_test=false"], modalities="name")
    gen = SeedGenerator(cfg)
    mods, _ = gen.prepare(_cone_pair())
    left, right = mods["name"]
    _, ids = topk_search(left, right, 1)
    return float(np.mean(ids[:, 0] == np.arange(len(left)))), gen


def test_centring_a_text_models_vectors_recovers_the_entities():
    centred, gen = _name_hits(True)
    raw, plain = _name_hits(False)
    assert centred > 0.95
    assert raw < 0.6  # the shared direction and the graphs' offsets drown the entities
    assert gen.feature_sources_["name"] == "features/name, centred per graph"
    assert plain.feature_sources_["name"] == "features/name"


@pytest.mark.parametrize("modalities", ["name", "image"])
def test_only_text_tables_are_centred(modalities):
    """The built-in n-grams (sparse, non-negative) and image tables keep their vectors."""
    pair = _cone_pair(40)
    for side, names in ((pair.left, "abc"), (pair.right, "abd")):
        side.names = [f"{names}{i}" for i in range(side.n)]
        if modalities == "image":
            side.features["image"] = side.features.pop("name")
        else:
            side.features.clear()
    cfg = load_config(None, ["features.signal_test=false"], modalities=modalities)
    gen = SeedGenerator(cfg)
    gen.prepare(pair)
    assert "centred" not in gen.feature_sources_[modalities]
