"""Image features: a torchvision ResNet without its classifier; a batch of URLs in, vectors out.

Each image becomes the ResNet's globally average-pooled last feature map (2048-d for
ResNet-50/101/152, 512-d for ResNet-18/34), the feature EVA, MCLEA and PSQE use for the visual
modality.  Preprocessing is the standard ImageNet evaluation transform: RGB, resize the shorter
side to ``round(image_size * 256 / 224)``, centre crop ``image_size``, scale to ``[0, 1]``,
normalise with the ImageNet mean and std.

:class:`ImageEncoder` is a Ray-Data-style callable class (heavy state built once in
``__init__``, ``__call__`` maps a batch dict to a batch dict) but imports no Ray, so it runs the
same in a plain loop, in tests and inside a Ray Data ``map_batches`` actor.

Weights are never downloaded: torchvision is always asked for ``weights=None`` and real weights
come from a file at any fsspec URL (see :func:`load_image_model`).
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np
import torch
from PIL import Image
from torchvision.models import get_model
from torchvision.transforms import v2

from psqe_ray.encoders.text import pick_device
from psqe_ray.errors import ConfigError, DataError
from psqe_ray.io.fs import StorageOptions, join, one_line, read_bytes, resolve

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Wrappers whose state dicts prefix every key: DataParallel/DDP ("module.") and torch.compile
# ("_orig_mod.").  Checkpoints of fine-tuned backbones commonly carry one or both.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOW_KEYS = 5


# -- the model ----------------------------------------------------------------------------------

def load_image_model(arch: str = "resnet152", weights: str | None = None,
                     storage_options: StorageOptions = None) -> torch.nn.Module:
    """A torchvision ResNet feature extractor (``fc`` -> ``Identity``), on CPU, in eval mode.

    The returned module maps a float32 tensor ``(n, 3, H, W)`` (ImageNet-normalised) to float32
    features ``(n, d)``; ``d`` is :func:`feature_dim` (2048 for resnet50/101/152, 512 for
    resnet18/34).

    Args:
        arch: a torchvision model name with an ``fc`` classifier (``resnet18`` ... ``resnet152``,
            ``resnext*``, ``wide_resnet*``).  Ignored when ``weights`` is a full checkpoint.
        weights: local path or fsspec URL of a checkpoint written by ``torch.save``, holding
            (a) a state dict, (b) a dict with the state dict under ``"state_dict"`` or
            ``"model"``, or (c) a whole pickled ``nn.Module``.  ``module.`` / ``_orig_mod.``
            key prefixes are stripped and classifier keys (``fc.*``) ignored.  ``None`` gives
            random weights (tests and benchmarks only; a warning is logged).
        storage_options: fsspec options for ``weights``.

    Security: state dicts are read with ``weights_only=True``.  Only when that refuses the file
    is it unpickled in full (``weights_only=False``), which can run arbitrary code: load full
    checkpoints only from sources you trust.

    Raises:
        DataError: the weights file is absent, unreadable, not a checkpoint, or its keys or
            shapes do not fit ``arch`` (the message names the URL and a few keys).
        ConfigError: ``arch`` is not a torchvision model with an ``fc`` classifier.
    """
    if weights is None:
        log.warning("no image weights given: %s is randomly initialised, its features carry no "
                    "meaning (use this only for tests and benchmarks)", arch)
        return _finish(_backbone(arch))
    url = str(weights)
    fs, path = resolve(url, storage_options)
    raw = read_bytes(fs, path, url)
    obj = _load_checkpoint(raw, url)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], (Mapping, torch.nn.Module)):
                obj = obj[key]
                break
    if isinstance(obj, torch.nn.Module):
        log.info("%s holds a full model (%s); arch=%r is ignored", url, type(obj).__name__, arch)
        if isinstance(getattr(obj, "fc", None), torch.nn.Module):
            obj.fc = torch.nn.Identity()
        return _finish(obj)
    if not isinstance(obj, Mapping):
        raise DataError(url, f"not a model checkpoint: holds a {type(obj).__name__}, expected a "
                        "state dict, a dict with 'state_dict' or 'model', or an nn.Module")
    state = _clean_state_dict(obj, url)
    model = _backbone(arch)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise DataError(url, f"weights do not fit {arch}: {one_line(exc)}") from None
    # Checkpoints from PyTorch < 0.4.1 lack BatchNorm counters; they do not affect inference.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected key(s): "
                         f"{_few(result.unexpected_keys)}")
        raise DataError(url, f"weights do not fit {arch}: " + "; ".join(parts))
    log.info("loaded %s weights from %s (%d tensors)", arch, url, len(state))
    return _finish(model)


def feature_dim(model: torch.nn.Module) -> int:
    """Output dimension ``d`` of a feature extractor, found by running one 1x3x64x64 zero image.

    Running beats inspecting because a full checkpoint may be any ResNet variant; 64x64 is
    enough since ResNets pool adaptively.  Raises ValueError if the output is not ``(1, d)``.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, 64, 64, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"feature extractor must return (n, d) features, got {shape}")
    return int(out.shape[1])


def _backbone(arch: str) -> torch.nn.Module:
    try:
        model = get_model(arch, weights=None)  # never weights=<enum>: that downloads
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"unknown image model {arch!r}: {one_line(exc)}") from None
    if not isinstance(getattr(model, "fc", None), torch.nn.Linear):
        raise ConfigError(f"image model {arch!r} has no 'fc' classifier to remove; use a ResNet "
                          "(resnet18/34/50/101/152) or a ResNet variant")
    model.fc = torch.nn.Identity()
    return model


def _finish(model: torch.nn.Module) -> torch.nn.Module:
    # float32 on CPU: a half-precision checkpoint would not run on CPU, and the caller moves it.
    return model.float().cpu().eval()


def _load_checkpoint(raw: bytes, url: str) -> Any:
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # a full nn.Module (or not a checkpoint at all): see the docstring on trust
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ...
        raise DataError(url, f"not a PyTorch checkpoint: {one_line(exc)}") from None
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(url, f"not a PyTorch checkpoint: {one_line(exc)}") from None


def _clean_state_dict(state: Mapping, url: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(url, f"not a state dict: key {str(key)[:80]!r} holds a "
                            f"{type(value).__name__} (top-level keys: {_few(list(state))})")
        key = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    stripped = True
        if key.startswith("fc."):
            continue  # the classifier head is replaced by Identity
        out[key] = value
    if not out:
        raise DataError(url, "the checkpoint holds no backbone weights (empty, or only fc.*)")
    return out


def _few(keys: list) -> str:
    shown = ", ".join(str(k) for k in keys[:_SHOW_KEYS])
    return shown + (", ..." if len(keys) > _SHOW_KEYS else "")


def preprocessing(image_size: int = 224) -> v2.Compose:
    """ImageNet evaluation transform: PIL image -> float32 tensor ``(3, image_size, image_size)``.

    Resize and crop run on the PIL image (before conversion to a tensor) so that large images
    are shrunk by PIL's antialiased resize and never held as full-size float tensors.
    """
    return v2.Compose([
        v2.Resize(round(image_size * 256 / 224), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


# -- the encoder ----------------------------------------------------------------------------------

class ImageEncoder:
    """Batch UDF: ``{side, entity_id, url}`` -> ``{side, entity_id, vector, present, error}``.

    The model is loaded once here; each call reads and decodes images with ``io_threads``
    threads (object-store reads are latency-bound), overlapping the decoding of the next chunk
    with the model run on the current one, and runs the model on chunks of ``batch_size``.

    Args:
        arch, weights, storage_options: see :func:`load_image_model` (``storage_options`` is
            also used to read the images).
        batch_size: images per forward pass (bounds device memory).
        device: ``"auto"`` (CUDA when available, else CPU), or any ``torch.device`` string.
        image_size: side of the square crop fed to the model.
        base_url: URL that relative image urls are joined to.  The ``images`` table stores urls
            relative to the dataset root (see :meth:`psqe_ray.io.dataset.DatasetWriter.put_file`),
            so pass the dataset URL.  Without it, relative urls are local paths (from the cwd).
        io_threads: threads that read and decode images; 1 reads sequentially.
        threads: torch intra-op threads on CPU (``None``: torch's default).
        timeout: seconds to connect to, and to wait for bytes from, an ``http(s)://`` or
            ``s3://`` image (``encode.image_timeout``); an image slower than that is counted
            as unreadable like a missing file, so a server that never answers cannot stall
            the job.

    Counters (for throughput logs): ``images_seen`` (urls that were not None),
    ``images_failed`` (of those, unreadable or undecodable), ``seconds`` (time in the model,
    device synchronisation included), ``read_seconds`` (time waiting for reads and decoding).
    """

    def __init__(self, arch: str = "resnet152", weights: str | None = None, *,
                 batch_size: int = 32, device: str = "auto", image_size: int = 224,
                 base_url: str | None = None, storage_options: StorageOptions = None,
                 io_threads: int = 8, threads: int | None = None,
                 timeout: float = 30.0) -> None:
        if batch_size < 1 or image_size < 8 or io_threads < 1:
            raise ConfigError("batch_size and io_threads must be >= 1 and image_size >= 8")
        if not timeout > 0:
            raise ConfigError("the image timeout must be > 0 seconds")
        self.timeout = float(timeout)
        if threads:  # torch intra-op threads on CPU (several actors share the cores)
            torch.set_num_threads(int(threads))
        self.device = pick_device(device)
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.base_url = None if base_url is None else str(base_url)
        self.storage_options = storage_options
        self.io_threads = int(io_threads)
        self.model = load_image_model(arch, weights, storage_options).to(self.device)
        self.dim = feature_dim(self.model)
        self.transform = preprocessing(self.image_size)
        self._fs: dict[str, fsspec.AbstractFileSystem] = {}  # one filesystem per scheme
        self._pool: ThreadPoolExecutor | None = None
        self.images_seen = 0
        self.images_failed = 0
        self.seconds = 0.0
        self.read_seconds = 0.0

    # -- Ray Data entry point --------------------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode one batch.

        Input columns: ``side`` (str, n), ``entity_id`` (int64, n), ``url`` (object, n: str, or
        None when the entity has no image).  Output columns: ``side``, ``entity_id`` (int64),
        ``vector`` (float32, (n, d)), ``present`` (bool, n), ``error`` (object, n: None, or a
        one-line message naming the url for an unreadable or undecodable image).  Absent and
        failed images get ``present=False`` and an all-zero vector.  Never raises for bad images.
        """
        urls = [_url_or_none(u) for u in batch["url"]]
        vectors, present, errors = self.encode_paths(urls)
        error = np.empty(len(errors), dtype=object)
        error[:] = errors
        return {
            "side": np.asarray(batch["side"]),
            "entity_id": np.asarray(batch["entity_id"], dtype=np.int64),
            "vector": vectors,
            "present": present,
            "error": error,
        }

    def encode_paths(self, urls: list[str | None]) -> tuple[np.ndarray, np.ndarray, list]:
        """Encode images at ``urls`` (None = no image).

        Returns ``(vectors, present, errors)``: float32 ``(n, d)``, bool ``(n,)`` and a list of
        ``n`` entries, each None or a one-line message.  Rows that are not present are zero.
        """
        n = len(urls)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        present = np.zeros(n, dtype=bool)
        errors: list[str | None] = [None] * n
        rows = [i for i, u in enumerate(urls) if u is not None]
        self.images_seen += len(rows)
        chunks = [rows[a:a + self.batch_size] for a in range(0, len(rows), self.batch_size)]
        pending = self._submit(chunks[0], urls) if chunks else []
        for c, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            loaded = [f.result() for f in pending]
            self.read_seconds += time.perf_counter() - t0
            # Start reading the next chunk before the model runs, so I/O overlaps compute.
            pending = self._submit(chunks[c + 1], urls) if c + 1 < len(chunks) else []
            ok_rows, tensors = [], []
            for i, (tensor, err) in zip(chunk, loaded):
                if tensor is None:
                    errors[i] = err
                else:
                    ok_rows.append(i)
                    tensors.append(tensor)
            if tensors:
                vectors[ok_rows] = self._embed(torch.stack(tensors))
                present[ok_rows] = True
        failed = sum(e is not None for e in errors)
        if failed:
            self.images_failed += failed
            first = next(e for e in errors if e is not None)
            log.warning("%d of %d image(s) unreadable (first: %s)", failed, len(rows), first)
        return vectors, present, errors

    # -- internals -------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> np.ndarray:
        t0 = time.perf_counter()
        with torch.inference_mode():
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            else:
                x = x.to(self.device)
            out = self.model(x).float().cpu().numpy()
        self.seconds += time.perf_counter() - t0  # .cpu() synchronises, so this is model time
        return out

    def _submit(self, chunk: list[int], urls: list[str | None]) -> list[Future]:
        if self.io_threads == 1 or len(chunk) == 1:
            return [_done(self._load(urls[i])) for i in chunk]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.io_threads, thread_name_prefix="image-read")
        return [self._pool.submit(self._load, urls[i]) for i in chunk]

    def _load(self, url: str) -> tuple[torch.Tensor | None, str | None]:
        """Read and preprocess one image: ``(tensor (3, s, s), None)`` or ``(None, message)``."""
        full = self._absolute(url)
        try:
            fs, path = self._filesystem(full)
            data = read_bytes(fs, path, full)
        except DataError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad image must not fail the batch
            return None, f"{full}: cannot read: {one_line(exc)}"
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")  # decodes fully: truncated files fail here
            return self.transform(rgb), None
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, ...
            return None, f"{full}: cannot decode image: {one_line(exc)}"

    def _absolute(self, url: str) -> str:
        # Same rule as Dataset.url_of: urls with a scheme or a leading "/" are absolute.
        if self.base_url is None or "://" in url or "::" in url or url.startswith("/"):
            return url
        return join(self.base_url, url)

    def _options(self, scheme: str) -> StorageOptions:
        """``storage_options`` plus the read timeout for remote schemes (the caller's win)."""
        opts = dict(self.storage_options or {})
        t = self.timeout
        if scheme in ("http", "https"):
            import aiohttp

            opts["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
                total=None, connect=t, sock_connect=t, sock_read=t),
                **opts.get("client_kwargs", {})}
        elif scheme in ("s3", "s3a"):
            opts["config_kwargs"] = {"connect_timeout": t, "read_timeout": t,
                                     **opts.get("config_kwargs", {})}
        return opts

    def _filesystem(self, url: str) -> tuple[fsspec.AbstractFileSystem, str]:
        if "::" in url:  # chained URLs (e.g. simplecache::s3://...) carry per-URL layers
            return resolve(url, self.storage_options)
        scheme = fsspec.core.split_protocol(url)[0] or "file"
        fs = self._fs.get(scheme)
        if fs is None:
            fs, path = resolve(url, self._options(scheme))
            self._fs[scheme] = fs
            return fs, path
        return fs, fs._strip_protocol(url)

    def __getstate__(self) -> dict[str, Any]:
        # A thread pool cannot be pickled (Ray may serialise a constructed instance).
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


def _done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def _url_or_none(u: Any) -> str | None:
    # Arrow nulls arrive as None in object arrays, but as NaN after a trip through pandas.
    if u is None or (isinstance(u, float) and math.isnan(u)):
        return None
    return str(u)
