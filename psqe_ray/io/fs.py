"""URLs to filesystems: every location psqe-ray reads or writes goes through here.

Any fsspec URL works: plain paths, ``file://``, ``memory://``, ``s3://``, ``gs://`` (with
``gcsfs`` installed), ``http(s)://`` for reading.  For S3-compatible endpoints set
``AWS_ENDPOINT_URL`` (honoured by s3fs, pyarrow and Ray Data) or pass ``storage_options``.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from psqe_ray.errors import DataError, one_line

StorageOptions = dict[str, Any] | None


def _no_expect_continue() -> None:
    """S3 writes without ``Expect: 100-continue``, so that ``PSQE_RAY_STORAGE_TIMEOUT`` bounds
    them too.  botocore asks every S3 PUT / POST with a body (PutObject, UploadPart, ...) to
    wait for the server's ``100 Continue`` before sending it, and aiohttp (under s3fs) waits
    for that answer without any timeout: a store that accepts a write and never answers held
    the job forever.  Without the header the body goes at once and the read timeout applies
    to the answer, as for every other request.  The header only saves uploading a body the
    server would refuse; nothing else depends on it.  Applied to the botocore sessions created
    after this module is imported (s3fs creates its own lazily, on its first request), in
    every process that imports it: the CLI, Ray tasks and actors, and the Ray Train processes
    that unpickle our training loop; without botocore installed there is nothing to do."""
    try:
        from botocore import handlers
    except ImportError:  # pragma: no cover - s3fs (and botocore) are dependencies
        return
    handlers.BUILTIN_HANDLERS[:] = [h for h in handlers.BUILTIN_HANDLERS
                                    if h[1] is not handlers.add_expect_header]


_no_expect_continue()

# bytes this process has read through read_bytes (a lock: image encoders read in threads)
_read = {"bytes": 0}
_read_lock = threading.Lock()


def _env_number(name: str, default: float, kind=float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise DataError(name, f"must be a number, got {raw!r}") from None
    if value < 0:
        raise DataError(name, f"must be >= 0, got {raw!r}")
    return value


def storage_limits() -> tuple[int, float]:
    """(retries, timeout in seconds) of every request to an object store:
    ``PSQE_RAY_STORAGE_RETRIES`` (default 2: three tries) and ``PSQE_RAY_STORAGE_TIMEOUT``
    (default 15 s to connect, and between bytes of a response).  Bounded so that a store that
    went away fails the job in seconds with one clear error instead of minutes of retries."""
    return (int(_env_number("PSQE_RAY_STORAGE_RETRIES", 2, int)),
            float(_env_number("PSQE_RAY_STORAGE_TIMEOUT", 15.0)))


def _with_limits(url: str, storage_options: StorageOptions) -> dict[str, Any]:
    """``storage_options`` plus the bounded retries and timeouts for S3 URLs (options the
    caller gave win).  botocore does the retrying (its standard mode: refused and reset
    connections, timeouts, throttling, 5xx); :func:`resolve` gives s3fs's own retry loop one
    try, so the bound is the one the setting names."""
    opts = dict(storage_options or {})
    if fsspec.core.split_protocol(url)[0] not in ("s3", "s3a"):
        return opts
    retries, timeout = storage_limits()
    config = {"connect_timeout": timeout, "read_timeout": timeout,
              "retries": {"total_max_attempts": retries + 1, "mode": "standard"},
              **opts.get("config_kwargs", {})}
    return {**opts, "config_kwargs": config}


# ``scheme://user:password@host`` (and ``scheme://token@host``): the userinfo part of a URL
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")
# environment variables whose values are credentials: never printed, logged or written
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
              "AWS_SECURITY_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS_JSON", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_SAS_TOKEN", "HF_TOKEN")


def redact(text: str) -> str:
    """``text`` with every credential removed: the ``user:password@`` part of URLs becomes
    ``***@``, and the values of the credential variables in :data:`SECRET_ENV` (when set,
    at least 4 characters long) become ``***``.  Used for every error line, log record,
    manifest and report psqe-ray writes."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", str(text))
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    return text


def _location(url: str, storage_options: StorageOptions = None) -> tuple[str, str]:
    """(protocol, normalised path) of ``url``: what :func:`check_apart` compares."""
    fs, path = resolve(url, storage_options)
    proto = _protocols(fs)[0]
    return ("file" if is_local(fs) else proto), path.rstrip("/")


def check_apart(input_url: str, output_url: str, *, what: str = "the dataset",
                storage_options: StorageOptions = None) -> None:
    """Refuse an output at, inside or above an input (a run writing into its own dataset, or
    a dataset inside the folder a run replaces): :class:`DataError` naming the output."""
    ip, ipath = _location(input_url, storage_options)
    op, opath = _location(output_url, storage_options)
    if ip != op:
        return
    if opath == ipath:
        raise DataError(output_url, f"the output is {what} itself ({input_url}); choose an "
                        "output location outside it")
    if opath.startswith(ipath + "/"):
        raise DataError(output_url, f"the output lies inside {what} ({input_url}); choose an "
                        "output location outside it")
    if ipath.startswith(opath + "/"):
        raise DataError(output_url, f"{what} ({input_url}) lies inside the output; choose an "
                        "output location that does not contain it")


def resolve(url: str, storage_options: StorageOptions = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for ``url``; unknown schemes raise :class:`DataError`.
    Object stores get bounded retries and timeouts (:func:`storage_limits`)."""
    url = str(url)
    if not url:
        raise DataError("<empty URL>", "a location is required")
    try:
        fs, path = fsspec.core.url_to_fs(url, **_with_limits(url, storage_options))
    except (ValueError, ImportError) as exc:
        raise DataError(url, f"unsupported URL: {one_line(exc)}") from None
    if "config_kwargs" not in (storage_options or {}) and {"s3", "s3a"} & set(_protocols(fs)):
        # s3fs retries some failures (a reset connection, a read timeout) itself, 5 times,
        # around botocore's retries: its loop (a class attribute, not an option) gets one try
        fs.retries = 1
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


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes, url: str) -> None:
    """Store ``data`` as the file at ``path`` (parent folders made on local disks); a failure
    (the store unreachable, ...) is one :class:`DataError` naming ``url``."""
    try:
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        raise DataError(url, f"cannot write: {one_line(exc)}") from None


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
