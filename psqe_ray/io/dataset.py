"""Datasets on any fsspec URL, committed atomically by a manifest written last.

Layout of a dataset at ``URL``::

    URL/_MANIFEST.json                       written last: the commit
    URL/_UNCOMMITTED.json                    written first, removed after the commit
    URL/<table>/part-00000-<token>.parquet   one or more parts per table
    URL/images/<token>/<side>/<id>.png       optional files (``put_file``)

Every write gets a fresh ``token``; data files carry it in their names and the manifest lists
exactly the files of its commit.  Readers only ever open files the manifest lists, so a crashed
or failed write is invisible; :class:`DatasetWriter` removes its own files when it fails.  The
manifest is one object PUT on object stores (atomic) and a write-then-rename on local disks.
When the store went away mid-write and the files could not be removed, ``_UNCOMMITTED.json``
stays beside them: the next writer into ``URL`` clears them and starts over.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from psqe_ray.errors import DataError
from psqe_ray.io.fs import StorageOptions, exists, join, one_line, read_bytes, resolve
from psqe_ray.schemas import SIDES, conform, is_feature_table, modality_of
from psqe_ray.validation import ContractChecker

log = logging.getLogger(__name__)

MANIFEST = "_MANIFEST.json"
# written before the first part of a new dataset, removed after the commit: a folder holding it
# and no manifest is a write that was cut short (the store went away before the writer could
# clean up), and the next writer may clear it
UNCOMMITTED = "_UNCOMMITTED.json"
FORMAT = "psqe-ray/dataset"
FORMAT_VERSION = 1


def load_manifest(fs, path: str, url: str) -> dict[str, Any]:
    raw = read_bytes(fs, path, url)
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise DataError(url, f"malformed manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(url, f"not a psqe-ray manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(url, f"manifest format version {manifest.get('format_version')} is not "
                        f"supported (this psqe-ray reads {FORMAT_VERSION})")
    return manifest


class Dataset:
    """A committed dataset, read through its manifest; every table read is validated.

    Args:
        url: the dataset location.
        validate: run the full cross-table checks at open (reads every table once).
    """

    def __init__(self, url: str, *, storage_options: StorageOptions = None,
                 validate: bool = False) -> None:
        self.url = str(url)
        self.storage_options = storage_options
        self.fs, self.root = resolve(self.url, storage_options)
        try:
            self.fs.invalidate_cache()
        except Exception:  # noqa: BLE001
            pass
        manifest_path = join(self.root, MANIFEST)
        if not exists(self.fs, manifest_path, self.url):
            if exists(self.fs, self.root, self.url):
                raise DataError(self.url, f"not a psqe-ray dataset: no {MANIFEST} (not written "
                                "by psqe-ray, or an interrupted write)")
            raise DataError(self.url, "no such dataset: nothing exists at this location")
        self.manifest = load_manifest(self.fs, manifest_path, join(self.url, MANIFEST))
        if validate:
            self.validate()

    # -- metadata -------------------------------------------------------------------------------
    @property
    def tables(self) -> list[str]:
        return sorted(self.manifest["tables"])

    def has(self, name: str) -> bool:
        return name in self.manifest["tables"]

    @property
    def modalities(self) -> list[str]:
        return sorted(modality_of(t) for t in self.tables if is_feature_table(t))

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.manifest["tables"].get(name, {}).get("rows", {}))

    def entity_counts(self) -> dict[str, int]:
        c = self.counts("entities")
        return {s: int(c.get(s, 0)) for s in SIDES}

    def url_of(self, rel: str) -> str:
        """Absolute URL of a path stored relative to the dataset (absolute URLs pass through)."""
        if "://" in rel or rel.startswith("/"):
            return rel
        return join(self.url, rel)

    # -- reading --------------------------------------------------------------------------------
    def iter_parts(self, name: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Yield the parts of table ``name``, each conformed to the contract schema."""
        if not self.has(name):
            raise DataError(join(self.url, name), f"table not in this dataset (tables: "
                            f"{', '.join(self.tables)})")
        for rel in self.manifest["tables"][name]["parts"]:
            url = join(self.url, rel)
            try:
                raw = read_bytes(self.fs, join(self.root, rel), url)
            except DataError as exc:
                if exc.problem != "no such file":
                    raise
                raise DataError(url, f"no such file, yet the manifest lists it as a part of "
                                f"table {name!r} (the dataset changed after its commit)") from None
            try:
                table = pq.read_table(io.BytesIO(raw))
            except Exception as exc:  # noqa: BLE001
                raise DataError(url, f"unreadable Parquet: {one_line(exc)}") from None
            meta = table.schema.metadata or {}
            kind = meta.get(b"psqe.schema", b"").decode()
            if kind != name:
                raise DataError(url, f"schema metadata says {kind or 'nothing'!r}, expected "
                                f"{name!r}")
            table = conform(name, table.replace_schema_metadata(None), url)
            if columns is not None:
                table = table.select(columns)
            yield table

    def table(self, name: str, columns: list[str] | None = None,
              side: str | None = None) -> pa.Table:
        """The whole table ``name`` (optionally some columns, optionally one side)."""
        parts = list(self.iter_parts(name))
        table = pa.concat_tables(parts) if parts else None
        if table is None:
            raise DataError(join(self.url, name), "table has no parts")
        if side is not None:
            import pyarrow.compute as pc
            table = table.filter(pc.equal(table.column("side"), side))
        if columns is not None:
            table = table.select(columns)
        return table

    def validate(self, visit: Callable[[str, pa.Table], None] | None = None) -> ContractChecker:
        """Read every table once and run the cross-table checks; raise on the first problem.

        ``visit(name, part)``, when given, sees every validated part during that single read
        (so a caller that also summarises the tables need not read them again).
        """
        checker = ContractChecker(self.url, require_graph="entities" in self.manifest["tables"])
        for name in self.tables:
            for part in self.iter_parts(name):
                checker.add(name, part)
                if visit is not None:
                    visit(name, part)
        checker.finish()
        for name in self.tables:
            listed = {k: int(v) for k, v in self.counts(name).items()}
            if listed != checker.counts(name):
                raise DataError(join(self.url, name), f"row counts {checker.counts(name)} do "
                                f"not match the manifest {listed}")
        listed = self.manifest.get("files", [])
        if listed:
            # One listing per top-level folder, not one request per file (object stores).
            found: set[str] = set()
            prefix = self.root.rstrip("/") + "/"
            for top in sorted({"/".join(rel.split("/", 2)[:2]) for rel in listed}):
                try:
                    found.update(p.removeprefix(prefix) for p in self.fs.find(join(self.root, top)))
                except FileNotFoundError:
                    pass
            missing = [rel for rel in listed if rel not in found]
            if missing:
                raise DataError(join(self.url, missing[0]), f"file listed in the manifest is "
                                f"missing ({len(missing)} missing)")
        return checker
