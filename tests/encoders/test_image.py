"""Image encoder: checkpoint formats, bad-image handling, S3 reads, chunking (tiny ResNet, CPU)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model
from torchvision.models.resnet import BasicBlock, ResNet

from psqe_ray.encoders.image import ImageEncoder, feature_dim, load_image_model
from psqe_ray.errors import DataError

SIZE = 64  # image_size for encoder tests: keeps every forward pass cheap


def tiny_resnet(seed: int = 0) -> ResNet:
    """The smallest torchvision ResNet (one BasicBlock per stage; BasicBlock fixes the width)."""
    torch.manual_seed(seed)
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    # Non-trivial BatchNorm statistics, so that wrongly loaded buffers would show.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[str, ResNet]:
    """A tiny ResNet saved as a full pickled module; returns its path and the module."""
    model = tiny_resnet()
    path = tmp_path_factory.mktemp("weights") / "tiny_full.pt"
    torch.save(model, path)
    return str(path), model


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint) -> ImageEncoder:
    return ImageEncoder("resnet18", tiny_checkpoint[0], batch_size=8, device="cpu",
                        image_size=SIZE, io_threads=4)


def png(path, colour, size, *, pattern: bool = True) -> str:
    """Write an RGB PNG; ``pattern`` adds a gradient so the image is not flat."""
    w, h = size
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[:] = colour
    if pattern:
        arr[..., 0] = (arr[..., 0].astype(int) + np.arange(w)[None, :] * 3 % 256) % 256
    Image.fromarray(arr, mode="RGB").save(path, format="PNG")
    return str(path)


def batch_of(urls: list) -> dict[str, np.ndarray]:
    url = np.empty(len(urls), dtype=object)
    url[:] = urls
    return {"side": np.array(["left"] * len(urls), dtype=object),
            "entity_id": np.arange(len(urls), dtype=np.int64), "url": url}


# -- loading weights --------------------------------------------------------------------------

def test_state_dict_loads_into_resnet18(tmp_path):
    torch.manual_seed(1)
    ref = get_model("resnet18", weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    model = load_image_model("resnet18", str(path))
    assert not model.training
    assert isinstance(model.fc, torch.nn.Identity)
    assert feature_dim(model) == 512
    # random init differs per call, so equality proves the file was loaded
    assert torch.equal(model.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert torch.equal(model.bn1.running_var, ref.bn1.running_var)


def test_random_init_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="psqe_ray.encoders.image"):
        model = load_image_model("resnet18", None)
    assert feature_dim(model) == 512
    assert any("randomly initialised" in r.getMessage() for r in caplog.records)


def test_full_checkpoint_and_wrapped_state_dict(tmp_path, tiny_checkpoint):
    full_path, ref = tiny_checkpoint
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = torch.flatten(ref.avgpool(ref.layer4(ref.layer3(ref.layer2(ref.layer1(
            ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))), 1)
    full = load_image_model("resnet152", full_path)  # arch ignored for a full module
    assert isinstance(full.fc, torch.nn.Identity) and feature_dim(full) == 512
    with torch.inference_mode():
        torch.testing.assert_close(full(x), expected)

    # A DataParallel training checkpoint: "module." keys, classifier head, extra entries.
    torch.manual_seed(2)
    r18 = get_model("resnet18", weights=None, num_classes=7).eval()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in r18.state_dict().items()},
               "epoch": 3, "optimizer": {"lr": 0.1}}
    from_sd = load_image_model("resnet18", _save(wrapped, tmp_path / "wrapped.pt"))
    r18.fc = torch.nn.Identity()
    with torch.inference_mode():
        torch.testing.assert_close(from_sd(x), r18(x))
    as_model_key = load_image_model("resnet18", _save({"model": r18.state_dict()},
                                                      tmp_path / "model_key.pt"))
    torch.testing.assert_close(as_model_key.conv1.weight, r18.conv1.weight)


def test_bad_weights_raise_data_error(tmp_path, tiny_checkpoint):
    sd = get_model("resnet18", weights=None).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["layer2.0.conv1.weight"]
    with pytest.raises(DataError) as err:
        load_image_model("resnet18", _save(sd, tmp_path / "wrong.pt"))
    msg = str(err.value)
    assert "wrong.pt" in msg and "layer2.0.conv1.weight" in msg and "extra.weight" in msg

    with pytest.raises(DataError, match="missing key"):  # a tiny ResNet is not a resnet18
        load_image_model("resnet18", _save(tiny_checkpoint[1].state_dict(), tmp_path / "t.pt"))
    with pytest.raises(DataError, match="size mismatch"):  # shared keys, other block type
        load_image_model("resnet50", str(tmp_path / "t.pt"))

    missing = tmp_path / "nope" / "weights.pt"
    with pytest.raises(DataError, match="no such file") as err:
        load_image_model("resnet18", str(missing))
    assert str(missing) in str(err.value)

    (tmp_path / "junk.pt").write_bytes(os.urandom(512))
    with pytest.raises(DataError, match="not a PyTorch checkpoint"):
        load_image_model("resnet18", str(tmp_path / "junk.pt"))


def _save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


# -- encoding ---------------------------------------------------------------------------------

def test_encoder_batch_with_bad_images(tmp_path, encoder):
    red = png(tmp_path / "red.png", (200, 30, 30), (80, 80))
    blue = png(tmp_path / "blue.png", (20, 40, 220), (120, 50))  # non-square
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes())
    whole = (tmp_path / "red.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole[: len(whole) // 2])
    missing = str(tmp_path / "missing.png")
    urls = [red, None, blue, missing, str(corrupt), str(truncated), red]
    seen0, failed0 = encoder.images_seen, encoder.images_failed

    out = encoder(batch_of(urls))

    assert set(out) == {"side", "entity_id", "vector", "present", "error"}
    assert out["vector"].shape == (7, 512) and out["vector"].dtype == np.float32
    assert out["present"].dtype == bool and out["entity_id"].dtype == np.int64
    assert out["error"].dtype == object and len(out["error"]) == 7
    assert out["present"].tolist() == [True, False, True, False, False, False, True]
    bad = [i for i, e in enumerate(out["error"]) if e is not None]
    assert bad == [3, 4, 5]
    for i in bad:
        assert urls[i] in out["error"][i] and "\n" not in out["error"][i]
    assert "no such file" in out["error"][3] and "cannot decode" in out["error"][4]
    assert not out["vector"][~out["present"]].any()
    assert np.abs(out["vector"][0] - out["vector"][2]).max() > 1e-3  # red != blue
    np.testing.assert_allclose(out["vector"][0], out["vector"][6], rtol=0, atol=1e-5)
    again = encoder(batch_of(urls))
    np.testing.assert_array_equal(again["vector"], out["vector"])
    assert encoder.images_seen - seen0 == 12 and encoder.images_failed - failed0 == 6
    assert encoder.seconds > 0


def test_chunking_matches_one_chunk(tmp_path, tiny_checkpoint, encoder):
    rng = np.random.default_rng(3)
    urls = [png(tmp_path / f"{i}.png", rng.integers(0, 256, 3), (40 + 7 * i, 90 - 5 * i))
            for i in range(9)]
    urls.insert(4, None)
    one = encoder.encode_paths(urls)  # batch_size 8, 4 threads: chunks of 8 and 1
    small = ImageEncoder("resnet18", tiny_checkpoint[0], batch_size=3, device="cpu",
                         image_size=SIZE, io_threads=1)
    big = ImageEncoder("resnet18", tiny_checkpoint[0], batch_size=64, device="cpu",
                       image_size=SIZE)
    v_small, p_small, _ = small.encode_paths(urls)
    v_big, p_big, e_big = big.encode_paths(urls)
    assert p_big.sum() == 9 and not p_big[4] and all(e is None for e in e_big)
    np.testing.assert_array_equal(p_small, p_big)
    np.testing.assert_allclose(v_small, v_big, rtol=0, atol=1e-5)
    np.testing.assert_allclose(one[0], v_big, rtol=0, atol=1e-5)


def test_relative_urls_join_base_url(tmp_path, tiny_checkpoint):
    (tmp_path / "images" / "left").mkdir(parents=True)
    png(tmp_path / "images" / "left" / "0.png", (10, 200, 10), (70, 70))
    enc = ImageEncoder("resnet18", tiny_checkpoint[0], device="cpu", image_size=SIZE,
                       base_url=f"file://{tmp_path}")
    vec, present, errors = enc.encode_paths(["images/left/0.png", "images/left/1.png"])
    assert present.tolist() == [True, False]
    assert errors[0] is None and f"{tmp_path}/images/left/1.png" in errors[1]


def test_s3_image_and_weights(s3_bucket, tiny_checkpoint, encoder, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem()
    path, _ = tiny_checkpoint
    with open(path, "rb") as fh:
        fs.pipe(f"{s3_bucket}/models/tiny.pt", fh.read())
    local = png(tmp_path / "img.png", (120, 60, 200), (64, 96))
    with open(local, "rb") as fh:
        fs.pipe(f"{s3_bucket}/ds/images/right/5.png", fh.read())

    enc = ImageEncoder("resnet18", f"{s3_bucket}/models/tiny.pt", device="cpu", image_size=SIZE,
                       base_url=f"{s3_bucket}/ds")
    vec, present, errors = enc.encode_paths(
        ["images/right/5.png", f"{s3_bucket}/ds/images/right/5.png", "images/right/6.png"])
    assert present.tolist() == [True, True, False]
    assert errors[2] is not None and f"{s3_bucket}/ds/images/right/6.png" in errors[2]
    ref, _, _ = encoder.encode_paths([local])
    np.testing.assert_allclose(vec[:2], np.repeat(ref, 2, axis=0), rtol=0, atol=1e-5)
    assert list(enc._fs) == ["s3"]  # one filesystem for every S3 url
