"""URLs to filesystems: every location psqe-ray reads or writes goes through here.

Any fsspec URL works: plain paths, ``file://``, ``memory://``, ``s3://``, ``gs://`` (with
``gcsfs`` installed), ``http(s)://`` for reading.  For S3-compatible endpoints set
``AWS_ENDPOINT_URL`` (honoured by s3fs, pyarrow and Ray Data) or pass ``storage_options``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from psqe_ray.errors import DataError

StorageOptions = dict[str, Any] | None

# bytes this process has read through read_bytes (a lock: image encoders read in threads)
_read = {"bytes": 0}
_read_lock = threading.Lock()


def one_line(exc: BaseException) -> str:
    """An exception as a single short line (botocore and aiohttp messages span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def resolve(url: str, storage_options: StorageOptions = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for ``url``; unknown schemes raise :class:`DataError`."""
    url = str(url)
    if not url:
        raise DataError("<empty URL>", "a location is required")
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise DataError(url, f"unsupported URL: {one_line(exc)}") from None
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(path)
    return fs, path.rstrip("/") or path


def absolute(url: str) -> str:
    """``url`` with a local path made absolute, other URLs unchanged: Ray tasks and training
    workers may run in another working directory than the driver (Ray Train's do)."""
    url = str(url)
    if url.startswith("file://"):
        return os.path.abspath(url[len("file://"):])
    return url if "://" in url else os.path.abspath(url)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(base: str, *parts: str) -> str:
    """Join URL or path segments with ``/`` (fsspec paths always use ``/``)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def exists(fs: fsspec.AbstractFileSystem, path: str, url: str) -> bool:
    """``fs.exists`` that turns connection and permission failures into one clear error."""
    try:
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        raise DataError(url, f"cannot reach this location: {one_line(exc)}") from None


def read_bytes(fs: fsspec.AbstractFileSystem, path: str, url: str) -> bytes:
    """The whole file at ``path``; counted in :func:`bytes_read`."""
    try:
        with fs.open(path, "rb") as fh:
            data = fh.read()
        with _read_lock:
            _read["bytes"] += len(data)
        return data
    except FileNotFoundError:
        if any(p in ("http", "https") for p in _protocols(fs)):
            # fsspec's HTTP backend reports refused connections as FileNotFoundError too
            raise DataError(url, "not found, or the server cannot be reached") from None
        raise DataError(url, "no such file") from None
    except IsADirectoryError:
        raise DataError(url, "is a directory, expected a file") from None
    except Exception as exc:  # noqa: BLE001
        raise DataError(url, f"cannot read: {one_line(exc)}") from None


def bytes_read() -> int:
    """Bytes this process has read from storage through :func:`read_bytes` so far (every
    dataset table and manifest, seed partition, checkpoint and image psqe-ray reads); the Ray
    path's per-node accounting takes differences of it."""
    return _read["bytes"]


def read_json(url: str, storage_options: StorageOptions = None):
    """The JSON document at ``url`` (e.g. a committed output's report)."""
    import json

    fs, path = resolve(url, storage_options)
    return json.loads(read_bytes(fs, path, url))


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def check_bucket(fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
    """For object stores, fail early and clearly when the bucket does not exist."""
    if is_local(fs) or not {"s3", "s3a", "gs", "gcs", "abfs", "az"} & set(_protocols(fs)):
        return
    bucket = path.split("/", 1)[0]
    if not exists(fs, bucket, url):
        raise DataError(url, f"bucket {bucket!r} does not exist or is not accessible")
