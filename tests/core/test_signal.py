"""The modality signal test: opaque names are noticed and dropped without gold links."""

from __future__ import annotations

import numpy as np
import pytest

from psqe_ray.config import PSQEConfig, load_config
from psqe_ray.core.psqe import SeedGenerator
from psqe_ray.core.search import Searcher
from psqe_ray.core.signal import matched_permutation, signal_test
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.load import load_pair
from psqe_ray.testing.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = {}
    for opaque in ("", "right"):
        url = str(tmp_path_factory.mktemp("signal") / (opaque or "plain"))
        synthesize(url, SynthConfig(entities=1500, seed=5, opaque_names=opaque))
        out[opaque] = load_pair(Dataset(url))
    return out


def _test(left, right, seed=0):
    s = Searcher()
    return signal_test(lambda ids: left[ids], lambda q, k: s.topk(q, right, k), len(left),
                       len(right), seed)


def test_opaque_names_are_dropped_and_real_ones_kept(pairs):
    plain = SeedGenerator(PSQEConfig())
    plain.prepare(pairs[""])
    assert "name" in plain.modalities_ and plain.signal_["name"]["auc"] > 0.8
    opaque = SeedGenerator(PSQEConfig())
    mods, weights = opaque.prepare(pairs["right"])
    assert "name" not in mods and "name" not in weights and "name" not in opaque.modalities_
    assert opaque.signal_["name"]["signal"] is False and opaque.signal_["name"]["upper"] < 0.55
    assert "no shared signal" in opaque.skipped_["name"]
    # the other modalities are judged on their own and the image one, shared, stays
    assert "image" in opaque.modalities_
    assert opaque.signal_["image"] == plain.signal_["image"]
    # switched off: every modality is used as before
    off = SeedGenerator(load_config(None, ["features.signal_test=false"]))
    off.prepare(pairs["right"])
    assert "name" in off.modalities_ and off.signal_ == {}


def test_the_test_is_deterministic_and_finds_a_planted_signal():
    rng = np.random.default_rng(0)
    n, d = 2000, 32
    left = rng.normal(size=(n, d)).astype(np.float32)
    unrelated = rng.normal(size=(n, d)).astype(np.float32)
    related = (left[rng.permutation(n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    none, shared = _test(left, unrelated), _test(left, related)
    assert shared["signal"] and shared["z"] > 10 and shared["auc"] > 0.8
    assert not none["signal"] and abs(none["z"]) < 3 and none["upper"] < 0.55
    # too few queries for evidence either way: kept
    assert _test(left[:100], unrelated[:100])["signal"]
    assert _test(left, related) == shared
    tiny = _test(left[:10], related[:10])
    assert tiny["signal"] and tiny["z"] is None  # no evidence: nothing dropped


def test_the_baseline_only_swaps_columns_of_similar_weight():
    rng = np.random.default_rng(1)
    q = np.ones((50, 40)) * np.arange(1, 41)  # column weights 1..40
    perm = matched_permutation(q, rng, group=8)
    assert sorted(perm.tolist()) == list(range(40)) and (perm != np.arange(40)).any()
    assert (np.abs(perm - np.arange(40)) < 8).all() and (perm // 8 == np.arange(40) // 8).all()


def test_every_modality_without_signal_stops_the_run(pairs):
    gen = SeedGenerator(PSQEConfig(modalities=("name",)))
    with pytest.raises(ValueError, match="none of the modalities .* carries a signal"):
        gen.prepare(pairs["right"])
