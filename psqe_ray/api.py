"""The Python API: what the CLI does, for notebooks and scripts.

Every function takes dataset and output locations as URLs (local paths, ``s3://``, ``gs://``,
...), writes its output atomically (whole or absent, as the CLI does) and returns the report
it wrote as a dict.  ``engine="ray"`` runs the step on Ray (the cluster of ``RAY_ADDRESS``, or
an embedded local Ray) with the same result as in-process.  Gold links, when the dataset has
them, are read only to evaluate::

    import psqe_ray as pr

    pr.synthesize("pair", entities=1000)               # or pr.import_pair("dbp15k", ...)
    cfg = pr.make_config({"align.recipe": "pcmea"})
    report = pr.generate_seeds("pair", "out/seeds", cfg)
    metrics = pr.align_pair("pair", "out/seeds", "out/align", cfg)
    pr.evaluate_pairs("pair", "out/align/matches.parquet")  # precision / recall / F1

The README's "Python API" section has a complete example (a test runs it as written).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from psqe_ray.config import PSQEConfig, load_config
from psqe_ray.core.assignment import pair_metrics
from psqe_ray.core.graph import KGPair
from psqe_ray.errors import ConfigError, DataError
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions, exists, read_bytes, resolve
from psqe_ray.io.importers import import_pair
from psqe_ray.io.load import load_pair as _load_pair

__all__ = ["align_pair", "evaluate_pairs", "generate_seeds", "import_pair", "load_pair",
           "make_config", "run_pipeline", "synthesize"]



def make_config(settings: dict[str, Any] | None = None, yaml: str | None = None) -> PSQEConfig:
    """A checked configuration: the defaults, then ``yaml`` (the text of a config file), then
    ``settings``, a mapping of dotted keys as ``--set`` takes them
    (``{"align.recipe": "eva", "stage2.epochs": 50}``).  An unknown key or a bad value raises
    :class:`~psqe_ray.errors.ConfigError` naming it."""
    return load_config(yaml, settings=settings)


def _cfg(cfg: PSQEConfig | None) -> PSQEConfig:
    if cfg is None:
        return make_config()
    if not isinstance(cfg, PSQEConfig):
        raise ConfigError(f"expected a configuration from psqe_ray.make_config(), got {type(cfg).__name__}")
    return cfg


def _engine(engine: str):
    from psqe_ray.runners import engine_for  # ConfigError for an unknown name

    return engine_for(engine)


def synthesize(url: str, *, entities: int = 2000, seed: int = 0,
               storage_options: StorageOptions = None, **settings: Any) -> dict[str, Any]:
    """A synthetic KG pair with gold links at ``url`` (``psqe-ray synth``): ``entities`` per
    side; other :class:`~psqe_ray.testing.synth.SynthConfig` fields as keywords.  Returns the
    dataset's manifest."""
    from psqe_ray.testing.synth import SynthConfig, synthesize as make

    known = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown synthesis setting(s) {unknown} (known: {sorted(known)})")
    return make(url, SynthConfig(entities=entities, seed=seed, **settings),
                storage_options=storage_options)


def load_pair(dataset_url: str, *, storage_options: StorageOptions = None) -> KGPair:
    """The dataset in memory, validated: :class:`~psqe_ray.core.graph.KGPair` with ``left`` and
    ``right`` graphs (``n``, ``names``, triples as ``heads`` / ``relations`` / ``tails``,
    attributes, feature matrices) and ``gold`` (left ids, right ids) when present."""
    return _load_pair(Dataset(dataset_url, storage_options=storage_options))


def generate_seeds(dataset_url: str, out_url: str, cfg: PSQEConfig | None = None, *,
          engine: str = "local", storage_options: StorageOptions = None) -> dict[str, Any]:
    """Pseudo seeds (``psqe-ray seeds``; ``cfg.method``: psqe, uvp or multimodal-greedy) into
    ``out_url``: ``seeds.parquet`` and ``report.json`` (stages, counts and, with gold links,
    precision).  Returns the report; an output that already holds these seeds is reused."""
    cfg = _cfg(cfg)
    from psqe_ray.runners import run_seeds

    return run_seeds(dataset_url, out_url, cfg, storage_options=storage_options,
                     engine=_engine(engine))


def align_pair(dataset_url: str, seeds_url: str, out_url: str, cfg: PSQEConfig | None = None, *,
          engine: str = "local", storage_options: StorageOptions = None) -> dict[str, Any]:
    """Train ``cfg.align.recipe`` on the seeds at ``seeds_url`` (an output of :func:`generate_seeds` or
    any Parquet file with ``left_id``, ``right_id``) and align the whole pair
    (``psqe-ray align``): ``alignment.parquet`` (every left entity's top candidates),
    ``matches.parquet`` (the one-to-one alignment) and ``metrics.json`` under ``out_url``.
    Returns the metrics (Hits@k / MRR and the matches' precision / recall / F1 when the
    dataset has gold links)."""
    cfg = _cfg(cfg)
    from psqe_ray.runners import run_align

    return run_align(dataset_url, seeds_url, out_url, cfg, storage_options=storage_options,
                     engine=_engine(engine))


def run_pipeline(dataset_url: str, out_url: str, cfg: PSQEConfig | None = None, *,
        engine: str = "local", storage_options: StorageOptions = None) -> dict[str, Any]:
    """Seeds, then the aligner, then ``report.json`` and ``report.html`` under ``out_url``
    (``psqe-ray run``; ``jobs/run.py`` is ``engine="ray"``).  Returns the report."""
    cfg = _cfg(cfg)
    from psqe_ray.runners import run_pipeline as _run_pipeline

    return _run_pipeline(dataset_url, out_url, cfg, storage_options=storage_options,
                         engine=_engine(engine))


def evaluate_pairs(dataset_url: str, pairs: str | pa.Table, *,
             storage_options: StorageOptions = None) -> dict[str, Any]:
    """Precision, recall and F1 of entity pairs against the dataset's gold links: ``pairs`` is
    a Parquet URL or an Arrow table with ``left_id`` and ``right_id`` (a ``matches.parquet``,
    a seed list, your own alignment).  ``precision`` counts the pairs that touch an entity of
    some gold link (benchmark gold lists are partial; ``unjudged`` counts the others and
    ``precision_all`` takes them as wrong); ``recall`` = correct pairs / gold links."""
    pair = load_pair(dataset_url, storage_options=storage_options)
    if pair.gold is None:
        raise DataError(dataset_url, "the dataset has no gold links to evaluate against")
    where = pairs if isinstance(pairs, str) else "the pairs table"
    if isinstance(pairs, str):
        fs, path = resolve(pairs, storage_options)
        if not exists(fs, path, where):
            raise DataError(where, "no such file")
        data = read_bytes(fs, path, where)
        try:
            pairs = pq.read_table(pa.BufferReader(data))
        except Exception as exc:  # noqa: BLE001  (whatever Arrow says of a bad file)
            raise DataError(where, f"not a readable Parquet file: {' '.join(str(exc).split())}") \
                from None
    missing = [c for c in ("left_id", "right_id") if c not in pairs.column_names]
    if missing:
        raise DataError(where, f"missing column(s) {missing}; has {pairs.column_names}")
    left = pairs.column("left_id").to_numpy().astype(np.int64)
    right = pairs.column("right_id").to_numpy().astype(np.int64)
    for ids, n, side in ((left, pair.left.n, "left"), (right, pair.right.n, "right")):
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise DataError(where, f"{side}_id {int(ids[bad][0])} is not a {side} entity of "
                                   f"{dataset_url} (ids 0..{n - 1})")
    return pair_metrics(left, right, *pair.gold)
