"""Synthetic pairs: determinism, planted alignment, heavy tails, noise and missing rates, PNGs."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from psqe_ray.errors import ConfigError
from psqe_ray.io.dataset import Dataset
from psqe_ray.schemas import vectors_numpy
from psqe_ray.testing.synth import FeatureSpec, SynthConfig, synthesize


def _mem() -> str:
    return f"memory://synth-{uuid.uuid4().hex}/ds"


def _sorted(table: pa.Table) -> list[dict]:
    keys = [c for c in ("side", "entity_id", "left_id", "head", "relation", "tail", "attribute",
                        "relation_id") if c in table.column_names]
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


@pytest.fixture(scope="module")
def pair():
    cfg = SynthConfig(entities=3000, seed=7, image_files=0.05, chunk_size=1000)
    url = _mem()
    synthesize(url, cfg)
    return cfg, Dataset(url, validate=True)


def _gold(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    g = ds.table("gold")
    return g.column("left_id").to_numpy(), g.column("right_id").to_numpy()


def test_counts_and_dangling(pair):
    cfg, ds = pair
    assert ds.entity_counts() == {"left": 3000, "right": 3000}
    left, right = _gold(ds)
    assert len(left) == round(3000 * cfg.shared)
    assert len(np.unique(left)) == len(left) and len(np.unique(right)) == len(right)
    # dangling entities on both sides: ids not in gold
    assert 3000 - len(left) == 600 and 3000 - len(np.unique(right)) == 600
    # written in chunks: several parts per table
    assert len(ds.manifest["tables"]["entities"]["parts"]) >= 4


def test_ids_are_shuffled(pair):
    _, ds = pair
    left, right = _gold(ds)
    assert np.mean(left == right) < 0.01
    assert abs(np.corrcoef(left, right)[0, 1]) < 0.1


def test_heavy_tailed_degrees(pair):
    _, ds = pair
    t = ds.table("triples", side="left")
    deg = np.bincount(np.concatenate([t.column("head").to_numpy(), t.column("tail").to_numpy()]),
                      minlength=3000)
    top = np.sort(deg)[::-1]
    assert top[0] > 10 * deg.mean()
    assert top[:30].sum() > 0.10 * deg.sum()  # top 1 % of entities hold > 10 % of endpoints


def _edge_set(ds: Dataset, side: str, id_map: dict[int, int] | None) -> set[tuple[int, int]]:
    t = ds.table("triples", side=side)
    out = set()
    for h, r in zip(t.column("head").to_pylist(), t.column("tail").to_pylist()):
        if id_map is None:
            out.add((h, r))
        elif h in id_map and r in id_map:
            out.add((id_map[h], id_map[r]))
    return out


def test_edge_dropout_is_independent_per_side(pair):
    cfg, ds = pair
    left, right = _gold(ds)
    l2r = dict(zip(left.tolist(), right.tolist()))
    mapped = _edge_set(ds, "left", l2r)
    right_edges = _edge_set(ds, "right", None)
    kept = len(mapped & right_edges) / len(mapped)
    # a left edge between shared entities survives on the right with prob ~ 1 - dropout
    assert abs(kept - (1 - cfg.edge_dropout)) < 0.06
    assert kept < 0.95


def test_no_dropout_keeps_all_shared_edges():
    cfg = SynthConfig(entities=500, seed=1, edge_dropout=0.0, image_files=0.0)
    url = _mem()
    synthesize(url, cfg)
    ds = Dataset(url)
    left, right = _gold(ds)
    l2r = dict(zip(left.tolist(), right.tolist()))
    mapped = _edge_set(ds, "left", l2r)
    assert mapped <= _edge_set(ds, "right", None)


def test_features_noise_and_missing(pair):
    cfg, ds = pair
    spec = cfg.features[0]
    left, right = _gold(ds)
    vec, present = {}, {}
    for side in ("left", "right"):
        t = ds.table(f"features/{spec.modality}", side=side).sort_by("entity_id")
        vec[side] = vectors_numpy(t)
        present[side] = t.column("present").to_numpy(zero_copy_only=False)
        assert abs(1 - present[side].mean() - spec.missing) < 0.04
        assert np.all(vec[side][~present[side]] == 0)
    both = present["left"][left] & present["right"][right]
    a, b = vec["left"][left[both]], vec["right"][right[both]]
    cos = lambda x, y: np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    rng = np.random.default_rng(0)
    assert cos(a, b).mean() > cos(a, b[rng.permutation(len(b))]).mean() + 0.2


def test_names_noise_and_missing():
    url = _mem()
    synthesize(url, SynthConfig(entities=800, seed=3, name_noise=0.0, name_missing=0.25,
                                image_files=0.0))
    ds = Dataset(url)
    left, right = _gold(ds)
    names = {s: ds.table("entities", side=s).sort_by("entity_id").column("name").to_pylist()
             for s in ("left", "right")}
    pairs = [(names["left"][l], names["right"][r]) for l, r in zip(left, right)]
    full = [(a, b) for a, b in pairs if a is not None and b is not None]
    assert all(a == b for a, b in full)
    missing = np.mean([n is None for n in names["left"]])
    assert abs(missing - 0.25) < 0.05
    url2 = _mem()
    synthesize(url2, SynthConfig(entities=800, seed=3, name_noise=0.3, image_files=0.0))
    ds2 = Dataset(url2)
    l2, r2 = _gold(ds2)
    n2 = {s: ds2.table("entities", side=s).sort_by("entity_id").column("name").to_pylist()
          for s in ("left", "right")}
    same = np.mean([n2["left"][l] == n2["right"][r] for l, r in zip(l2, r2)])
    assert same < 0.2


def test_png_images_are_real_and_correlated(pair):
    cfg, ds = pair
    imgs = ds.table("images")
    assert imgs.num_rows > 0
    assert abs(imgs.num_rows / 6000 - cfg.image_files) < 0.02
    pics = {}
    for side, eid, url in zip(*(imgs.column(c).to_pylist() for c in ("side", "entity_id", "url"))):
        with ds.fs.open(ds.fs._strip_protocol(ds.url_of(url)), "rb") as fh:
            img = Image.open(io.BytesIO(fh.read()))
            img.load()
        assert img.size == (cfg.image_size, cfg.image_size) and img.mode == "RGB"
        pics[(side, eid)] = np.asarray(img, dtype=np.float32).reshape(-1)
    left, right = _gold(ds)
    matched = [(pics[("left", l)], pics[("right", r)]) for l, r in zip(left, right)
               if ("left", l) in pics and ("right", r) in pics]
    assert matched, "some gold pairs should have images on both sides"
    corr = np.mean([np.corrcoef(a, b)[0, 1] for a, b in matched])
    assert corr > 0.8


def test_deterministic_for_a_seed():
    cfg = SynthConfig(entities=400, seed=11, image_files=0.1, chunk_size=150,
                      features=(FeatureSpec("image", 8), FeatureSpec("text", 4, 0.1, 0.0)))
    a, b, c = _mem(), _mem(), _mem()
    synthesize(a, cfg)
    synthesize(b, cfg)
    synthesize(c, SynthConfig(**{**cfg.__dict__, "seed": 12}))
    da, db, dc = Dataset(a), Dataset(b), Dataset(c)
    assert da.tables == db.tables
    for name in da.tables:
        ta, tb = da.table(name), db.table(name)
        if name == "images":  # urls carry the commit token; the pixels must match
            ta, tb = ta.drop(["url"]), tb.drop(["url"])
        assert _sorted(ta) == _sorted(tb), name
    assert _sorted(da.table("gold")) != _sorted(dc.table("gold"))


def test_bad_config():
    with pytest.raises(ConfigError, match="shared must be in"):
        synthesize(_mem(), SynthConfig(entities=10, shared=1.5))
    with pytest.raises(ConfigError, match="expected MOD"):
        FeatureSpec.parse("a:1:2:3:4")
