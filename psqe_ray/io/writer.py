"""Writing a dataset: :class:`DatasetWriter` puts parts and files under a fresh token and commits
them by writing the manifest last (the layout and the commit rule: :mod:`psqe_ray.io.dataset`).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import secrets
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from psqe_ray import __version__
from psqe_ray.errors import DataError, DestinationError
from psqe_ray.io.fs import (StorageOptions, check_bucket, exists, is_local, join, one_line, redact,
                            resolve)
from psqe_ray.io.lock import OutputLock
from psqe_ray.schemas import SIDES, check_table_name, conform, is_feature_table, with_metadata
from psqe_ray.validation import ContractChecker

from psqe_ray.io.dataset import FORMAT, FORMAT_VERSION, MANIFEST, UNCOMMITTED, load_manifest

log = logging.getLogger(__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class DatasetWriter:
    """Writes tables into ``url`` and commits them atomically.

    Use as a context manager; an exception inside the block removes everything written::

        with DatasetWriter(url, stage="import", fingerprint=fp) as w:
            if w.committed:            # the same dataset is already there: nothing to do
                return
            w.write("entities", table)
            w.commit(meta={...})

    Args:
        url: destination (created if absent).  A destination that holds another dataset (a
            different fingerprint) or unrelated files is refused with :class:`DestinationError`.
        stage: stage name recorded in the manifest and in every table's metadata.
        fingerprint: fingerprint of the configuration and inputs that define the content.
        require_graph: whether the commit requires a non-empty ``entities`` table.
        entity_counts: entity counts per side for outputs that refer to another dataset.
        keep: sub-folders of ``url`` that may exist before the write (a job's committed stage
            outputs under ``stages/``); they are neither refused nor removed.
        update: add tables to the committed dataset at ``url`` (e.g. ``features/name``): its
            tables stay, a table written here replaces the one of the same name, and the new
            manifest (with ``fingerprint``) is the commit point.  Replaced parts are deleted
            after the commit; until then readers of the old manifest still see a whole dataset.
    """

    def __init__(self, url: str, *, stage: str, fingerprint: str,
                 storage_options: StorageOptions = None, require_graph: bool = True,
                 entity_counts: dict[str, int] | None = None, update: bool = False,
                 keep: tuple[str, ...] = (), inputs: dict[str, str] | None = None) -> None:
        self.url = str(url)
        self.inputs = dict(inputs or {})  # what the content was made from: name -> fingerprint
        self.stage = stage
        self.fingerprint = fingerprint
        self.fs, self.root = resolve(self.url, storage_options)
        self.token = secrets.token_hex(4)
        self.checker = ContractChecker(self.url, entity_counts=entity_counts,
                                       require_graph=require_graph)
        self.committed = False
        self._parts: dict[str, list[str]] = {}
        self._files: list[str] = []
        self._adopted: list[str] = []
        self._created_root = False
        self._started = time.monotonic()
        self._open = False
        self.update = update
        self._base: dict[str, Any] | None = None
        self.keep = keep

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "DatasetWriter":
        # one writer per output (psqe_ray.io.lock): a second run on the same URL is refused
        # here, before it writes anything
        check_bucket(self.fs, self.root, self.url)
        self._root_existed = exists(self.fs, self.root, self.url)
        self._lock = OutputLock(self.fs, self.root, self.url).acquire()
        try:
            return self._enter()
        except BaseException:
            self._release()
            if not self._root_existed:  # the lock made the folder: leave nothing behind
                self._created_root = True
                self._prune_dirs()
            raise

    def _why_different(self, old: dict[str, Any]) -> str:
        """Why a committed result is not this one, when the manifest says: another code
        version, or an input (the dataset) that changed since."""
        why = []
        if old.get("code_version") and old.get("code_version") != __version__:
            why.append(f"written by psqe-ray {old['code_version']}, this is {__version__}")
        for name, fp in self.inputs.items():
            was = (old.get("inputs") or {}).get(name)
            if was and was != fp:
                why.append(f"its input {name} changed since (fingerprint {was}, now {fp})")
        return "".join(f"; {w}" for w in why)

    def _release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def _enter(self) -> "DatasetWriter":
        manifest_path = join(self.root, MANIFEST)
        if self.update:
            if not exists(self.fs, manifest_path, self.url):
                raise DataError(self.url, "no such dataset: nothing to add tables to")
            old = load_manifest(self.fs, manifest_path, join(self.url, MANIFEST))
            if old.get("fingerprint") == self.fingerprint:
                self.committed = True
                return self
            self._base = old
            rows = old["tables"].get("entities", {}).get("rows", {})
            self.checker = ContractChecker(self.url, entity_counts={
                s: int(rows.get(s, 0)) for s in SIDES}, require_graph=False)
            self._open = True
            return self
        if exists(self.fs, manifest_path, self.url):
            old = load_manifest(self.fs, manifest_path, join(self.url, MANIFEST))
            if old.get("fingerprint") == self.fingerprint:
                self.committed = True
                return self
            raise DestinationError(
                f"{self.url}: already holds a different dataset (fingerprint "
                f"{old.get('fingerprint')}, stage {old.get('stage')!r}; this one is "
                f"{self.fingerprint}{self._why_different(old)}); choose another destination "
                "or delete it first")
        if exists(self.fs, self.root, self.url):
            try:
                kept = tuple(join(self.root, k).rstrip("/") + "/" for k in self.keep)
                leftover = [p for p in self.fs.find(self.root) if not p.startswith(kept)
                            and p != self._lock.path]
            except Exception as exc:  # noqa: BLE001
                raise DataError(self.url, f"cannot list destination: {one_line(exc)}") from None
            if join(self.root, UNCOMMITTED) in leftover:
                self._clear_interrupted(leftover)
                leftover = []
            if leftover:
                raise DestinationError(
                    f"{self.url}: destination is not empty and holds no psqe-ray dataset "
                    f"({len(leftover)} file(s), e.g. {leftover[0]}); choose an empty location")
        else:
            self._created_root = True
        if not self._root_existed:  # the lock made it
            self._created_root = True
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except Exception as exc:  # noqa: BLE001
            raise DataError(self.url, f"cannot create destination: {one_line(exc)}") from None
        self._open = True
        self._files.append(join(self.root, UNCOMMITTED))  # removed by abort (last) or commit
        self._put(join(self.root, UNCOMMITTED), json.dumps(
            {"stage": self.stage, "fingerprint": self.fingerprint, "token": self.token,
             "started": _now()}).encode(), UNCOMMITTED)
        return self

    def _clear_interrupted(self, files: list[str]) -> None:
        """Remove what a write cut short left (``files``: everything at the destination but
        the kept folders; it was empty when that write began, so all of it is that write's)."""
        log.info("%s: clearing an interrupted write (%d file(s), no manifest)", self.url,
                 len(files))
        marker = join(self.root, UNCOMMITTED)
        for path in sorted(files, key=lambda p: p == marker):  # the marker last
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                raise DataError(self.url, f"cannot clear an interrupted write ({path}): "
                                f"{one_line(exc)}") from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or (self._open and not self.committed):
            self.abort()
        self._release()

    def abort(self) -> None:
        """Remove every file this writer wrote (and directories it created that are empty).
        The uncommitted marker goes last, and stays when a file could not be removed (the
        store went away): the next writer clears what is left."""
        marker = join(self.root, UNCOMMITTED)
        reachable = True
        for path in sorted(self._files, key=lambda p: p == marker):
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - best effort; the manifest was never written,
                reachable = False  # and the marker stays: no more tries on a store that is
                break              # down
        self._files.clear()
        self._release()  # before pruning: the lock file is in the root
        if reachable:
            self._prune_dirs()
        self._open = False

    def _prune_dirs(self) -> None:
        try:
            if not self.fs.exists(self.root):
                return
            dirs = sorted((p for p, _, _ in self.fs.walk(self.root)), key=len, reverse=True)
            for d in dirs:
                if d.rstrip("/") == self.root.rstrip("/") and not self._created_root:
                    continue
                try:
                    if not self.fs.ls(d):
                        self.fs.rmdir(d)
                except Exception:  # noqa: BLE001
                    pass
        except Exception:  # noqa: BLE001
            pass

    # -- writing --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("DatasetWriter is not open (use it as a context manager, and do "
                               "not write after commit or when `committed` is already True)")

    def write(self, name: str, table: pa.Table | pa.RecordBatch, *,
              filename: str | None = None) -> None:
        """Validate ``table`` against the contract and write it as one more part of ``name``.

        ``filename`` (e.g. ``"seeds.parquet"``) stores the table as that single file at the
        dataset root instead of a part under ``<name>/`` (for outputs with a promised name).
        """
        self._check_open()
        check_table_name(name)
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        where = f"{join(self.url, name)} (part {len(self._parts.get(name, []))})"
        table = conform(name, table, where)
        if table.num_rows == 0 and self._parts.get(name):
            return  # an empty part adds nothing once the table exists
        self.checker.add(name, table)
        table = with_metadata(table, name, stage=self.stage, fingerprint=self.fingerprint)
        if filename is not None and self._parts.get(name):
            raise ValueError(f"table {name!r} already has parts; a single-file table has one")
        rel = filename or f"{name}/part-{len(self._parts.get(name, [])):05d}-{self.token}.parquet"
        path = join(self.root, rel)
        self._parts.setdefault(name, []).append(rel)
        self._files.append(path)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self._put(path, buf.getvalue(), rel)

    def put_file(self, rel: str, data: bytes, *, fixed: bool = False) -> str:
        """Store an extra file (e.g. an image) and return its path relative to the dataset.

        The file goes under ``<first segment of rel>/<token>/<rest>`` so that it is part of
        this commit only; ``fixed=True`` keeps ``rel`` as given (e.g. ``report.json``).
        """
        self._check_open()
        if not fixed:
            head, _, rest = rel.strip("/").partition("/")
            rel = f"{head}/{self.token}/{rest}" if rest else f"{head}/{self.token}"
        path = join(self.root, rel)
        if rel.endswith((".json", ".html")):  # reports: never a credential (see fs.redact)
            data = redact(data.decode("utf-8")).encode("utf-8")
        self._files.append(path)
        self._put(path, data, rel)
        return rel

    def adopt(self, rel: str) -> None:
        """Make a file that a task wrote under this dataset (``rel``: its path relative to the
        dataset) part of this commit: listed in the manifest, removed if the write fails."""
        self._check_open()
        self._files.append(join(self.root, rel))
        self._adopted.append(rel)

    def _put(self, path: str, data: bytes, rel: str) -> None:
        try:
            if is_local(self.fs):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, data)
        except Exception as exc:  # noqa: BLE001
            raise DataError(join(self.url, rel), f"cannot write: {one_line(exc)}") from None

    def commit(self, *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the cross-table checks, then write the manifest (the commit point)."""
        self._check_open()
        self.checker.finish()
        tables = {}
        for name, parts in self._parts.items():
            entry: dict[str, Any] = {"parts": parts, "rows": self.checker.counts(name)}
            if is_feature_table(name):
                entry["dim"] = self.checker.dims.get(name)
                entry["present"] = self.checker.present.get(name, {})
            tables[name] = entry
        base = self._base or {}
        replaced = [rel for name, entry in base.get("tables", {}).items() if name in tables
                    for rel in entry["parts"]]
        tables = {**{k: v for k, v in base.get("tables", {}).items() if k not in tables},
                  **tables}
        files = list(base.get("files", [])) + [
            p.removeprefix(self.root.rstrip("/") + "/") for p in self._files
            if not p.endswith(".parquet") and p != join(self.root, UNCOMMITTED)] + [r for r in self._adopted if r.endswith(".parquet")]
        meta = {**base.get("meta", {}), **(meta or {})}
        if self._base is not None:
            meta["updates"] = list(base.get("meta", {}).get("updates", [])) + [
                {"stage": self.stage, "fingerprint": self.fingerprint, "created": _now(),
                 "tables": sorted(self._parts)}]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "stage": base.get("stage", self.stage),
            "fingerprint": self.fingerprint,
            "code_version": __version__,
            "created": _now(),
            "token": self.token,
            "seconds": round(time.monotonic() - self._started, 3),
            "tables": tables,
            "files": files,
            **({"inputs": self.inputs} if self.inputs else {}),
            "meta": meta,
        }
        # no credential (a URL's user:password, an AWS key) is ever written into a manifest
        data = redact(json.dumps(manifest, indent=1, sort_keys=True)).encode()
        path = join(self.root, MANIFEST)
        if is_local(self.fs):
            tmp = f"{path}.{self.token}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            self._put(path, data, MANIFEST)
        self.committed = True
        self._open = False
        if join(self.root, UNCOMMITTED) in self._files:
            try:
                self.fs.rm_file(join(self.root, UNCOMMITTED))
            except Exception:  # noqa: BLE001 - the commit stands; a committed folder's
                pass           # marker is ignored (the manifest decides)
        for rel in replaced:  # no manifest lists them any more
            try:
                self.fs.rm_file(join(self.root, rel))
            except Exception:  # noqa: BLE001 - best effort, the commit stands
                log.warning("%s: could not delete replaced part %s", self.url, rel)
        return manifest
