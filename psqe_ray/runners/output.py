"""The one commit-or-reuse helper of the runners: a step's output folder, committed
atomically, or reused when it already holds this exact result.

Every runner (seeds, align, run) names its result by a fingerprint of what it depends on (the
dataset, the settings, the code version and, for Ray, the engine).  A folder committed under
that fingerprint is the result: the runner returns it without recomputing.  Anything else is
replaced by one atomic commit (:class:`~psqe_ray.io.dataset.DatasetWriter`: tables, files and
the result JSON, listed by a manifest written last).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Iterable

import pyarrow as pa

from psqe_ray.io.writer import DatasetWriter
from psqe_ray.io.fs import StorageOptions, join, read_json

log = logging.getLogger(__name__)


class StepOutput:
    """``with StepOutput(url, stage=..., fingerprint=fp, result="report.json", what=...) as
    out:`` then ``out.reused`` is the committed result when ``url`` already holds it (return
    it), else None: do the work and :meth:`commit` the result.  Leaving the block without a
    commit (an error) writes nothing that a reader would see.

    Args:
        url: the output folder.
        stage: the manifest's stage name (``seeds-psqe``, ``align-pcmea``, ``run``).
        fingerprint: what the result depends on.
        result: the result JSON's file name in the folder.
        what: for the log line of a reuse ("these seeds").
        keep: sub-folders that survive a rewrite (stage commits, checkpoints).
        entity_counts: the dataset's entity counts (tables that reference entities are checked).
        inputs: name -> fingerprint of what the result was made from.
    """

    def __init__(self, url: str, *, stage: str, fingerprint: str, result: str, what: str,
                 storage_options: StorageOptions = None, keep: tuple[str, ...] = (),
                 entity_counts: dict[str, int] | None = None,
                 inputs: dict[str, str] | None = None) -> None:
        self.url, self.result, self.what = url, result, what
        self.fingerprint, self.storage_options = fingerprint, storage_options
        self.writer = DatasetWriter(url, stage=stage, fingerprint=fingerprint,
                                    storage_options=storage_options, require_graph=False,
                                    entity_counts=entity_counts, keep=keep, inputs=inputs)
        self.reused: dict[str, Any] | None = None

    def __enter__(self) -> "StepOutput":
        self.writer.__enter__()
        try:
            if self.writer.committed:
                log.info("%s already holds %s (fingerprint %s)", self.url, self.what,
                         self.fingerprint)
                self.reused = read_json(join(self.url, self.result), self.storage_options)
        except BaseException:
            self.writer.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.writer.__exit__(exc_type, exc, tb)

    def commit(self, result: dict[str, Any], *,
               tables: Iterable[tuple[str, pa.Table, str]] = (),
               files: Iterable[tuple[str, bytes]] = (),
               meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write ``tables`` ((name, table, file name)), ``files`` ((path, bytes)) and the
        result JSON, then commit them at once; returns ``result``."""
        for name, table, filename in tables:
            self.writer.write(name, table, filename=filename)
        self.writer.put_file(self.result, json.dumps(result, indent=1, default=str).encode(),
                             fixed=True)
        for rel, data in files:
            self.writer.put_file(rel, data, fixed=True)
        self.writer.commit(meta=meta)
        return result
