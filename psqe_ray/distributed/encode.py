"""Encode one modality of a dataset on a Ray Data actor pool into ``features/<modality>``.

* ``name``: one text per entity (its name); an entity without a name is flagged absent.
* ``relation`` / ``attribute``: the distinct relation names (attribute names, or "name value")
  are encoded once; an entity's vector is the mean over its triples / attribute rows
  (multi-valued fields averaged, as the field's loaders do with their bags).
* ``image``: one image per entity from the ``images`` table (any fsspec URL); entities without
  an image, or whose file is unreadable or corrupt, are flagged absent and counted.

The encoders are callable classes (model loaded once per actor) run by ``map_batches`` with one
GPU per actor on a GPU cluster and half a CPU otherwise (see :func:`runtime.actor_plan`).  The
table is added to the dataset atomically (:class:`DatasetWriter` in update mode); a modality
already encoded with the same settings is skipped.  Each actor's output batches carry its usage
record (:func:`runtime.metered`); the result's ``nodes`` tallies them per node.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from psqe_ray.config import EncodeConfig, fingerprint
from psqe_ray.core.progress import Progress
from psqe_ray.distributed.runtime import actor_plan, ray_session
from psqe_ray.distributed.usage import Meter, metered, node_usage, pop_usage
from psqe_ray.errors import ConfigError, DataError, NothingToEncode, PsqeError
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions, join, one_line
from psqe_ray.io.writer import DatasetWriter
from psqe_ray.schemas import SIDES, feature_table, local_name

log = logging.getLogger(__name__)

MODALITIES = ("name", "relation", "attribute", "image")
_CHUNK = 100_000  # entities per written part
_BLOCK_ROWS = 2_000  # rows per input block of the pool at most (the progress's granularity)


@dataclass
class EncodeResult:
    modality: str
    skipped: bool
    rows: int = 0
    present: int = 0
    units: int = 0          # texts or images encoded
    failed: int = 0         # unreadable / corrupt images
    failures: list | None = None
    seconds: float = 0.0
    per_second: float = 0.0
    dim: int = 0
    workers: int = 0
    resources: dict | None = None
    nodes: dict | None = None  # per-node usage (runtime.node_usage); None when skipped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- what to encode -------------------------------------------------------------------------------
def _text_units(ds: Dataset, modality: str, cfg: EncodeConfig
                ) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(distinct texts, side -> (entity ids, text index)) - one row per (entity, occurrence)."""
    rows: dict[str, tuple[list, list]] = {}
    if modality == "name":
        ent = ds.table("entities", ["side", "entity_id", "name"])
        for s in SIDES:
            t = ent.filter(pc.equal(ent.column("side"), s))
            names = t.column("name").to_pylist()
            keep = [i for i, n in enumerate(names) if n and n.strip()]  # empty = no name
            rows[s] = (t.column("entity_id").to_numpy()[keep], [names[i] for i in keep])
    elif modality == "relation":
        if not ds.has("triples") or not ds.has("relations"):
            raise NothingToEncode(join(ds.url, "relations"), "relation text needs the "
                                  "triples and relations tables")
        rel = ds.table("relations")
        tri = ds.table("triples")
        for s in SIDES:
            r = rel.filter(pc.equal(rel.column("side"), s))
            ids = r.column("relation_id").to_numpy()
            names = [n or (local_name(u) if u else None) for n, u in
                     zip(r.column("name").to_pylist(), r.column("uri").to_pylist())]
            missing = sum(n is None for n in names)
            if missing and missing == len(names):  # e.g. DBP15K's id layout
                raise NothingToEncode(join(ds.url, "relations"), f"side {s}: the relations "
                                      "are ids only (no name or URI): no text to encode")
            if missing:
                raise DataError(join(ds.url, "relations"), f"side {s}: {missing} of "
                                f"{len(names)} relations have no name or URI, so no text "
                                "to encode")
            text_of = np.empty(len(ids), dtype=object)
            text_of[ids] = names
            t = tri.filter(pc.equal(tri.column("side"), s))
            rel_ids = t.column("relation").to_numpy()
            ent = np.concatenate([t.column("head").to_numpy(), t.column("tail").to_numpy()])
            rows[s] = (ent, list(text_of[np.concatenate([rel_ids, rel_ids])]))
    elif modality == "attribute":
        if not ds.has("attributes"):
            raise NothingToEncode(join(ds.url, "attributes"), "attribute text needs the "
                                  "attributes table")
        att = ds.table("attributes")
        for s in SIDES:
            a = att.filter(pc.equal(att.column("side"), s))
            names = a.column("attribute").to_pylist()
            if cfg.attribute_values:
                vals = a.column("value").to_pylist()
                names = [f"{n} {v}" if v else n for n, v in zip(names, vals)]
            rows[s] = (a.column("entity_id").to_numpy(), [local_name(n) or n for n in names])
    else:
        raise ConfigError(f"no text for modality {modality!r}")
    vocab: dict[str, int] = {}
    out = {}
    for s, (ent, texts) in rows.items():
        idx = np.fromiter((vocab.setdefault(t, len(vocab)) for t in texts), np.int64,
                          count=len(texts))
        out[s] = (np.asarray(ent, np.int64), idx)
    return list(vocab), out


def _image_units(ds: Dataset) -> pa.Table:
    """(side, entity_id, url) for every entity; url null when it has no image."""
    counts = ds.entity_counts()
    parts = []
    img = ds.table("images") if ds.has("images") else None
    for s in SIDES:
        url = np.full(counts[s], None, dtype=object)
        if img is not None:
            t = img.filter(pc.equal(img.column("side"), s))
            for i, u in zip(t.column("entity_id").to_numpy().tolist(),
                            t.column("url").to_pylist()):
                url[i] = ds.url_of(u) if u else None
        parts.append(pa.table({"side": pa.array([s] * counts[s], pa.string()),
                               "entity_id": np.arange(counts[s], dtype=np.int64),
                               "url": pa.array(url.tolist(), pa.string())}))
    return pa.concat_tables(parts)


def _model_identity(model: str) -> dict[str, Any]:
    """What the fingerprint knows of a model: the URL, plus file names and sizes when local."""
    ident: dict[str, Any] = {"model": model}
    path = model.removeprefix("file://")
    if os.path.isdir(path):
        ident["files"] = sorted((os.path.relpath(os.path.join(d, f), path),
                                 os.path.getsize(os.path.join(d, f)))
                                for d, _, fs in os.walk(path) for f in fs)
        cfg = os.path.join(path, "config.json")
        if os.path.isfile(cfg):
            with open(cfg, "rb") as fh:
                ident["config_sha256"] = hashlib.sha256(fh.read()).hexdigest()
    elif os.path.isfile(path):
        ident["size"] = os.path.getsize(path)
    return ident


def encode_fingerprint(modality: str, cfg: EncodeConfig) -> str:
    if modality == "image":
        keys = {"arch": cfg.image_arch, "weights": _model_identity(cfg.image_weights)
                if cfg.image_weights else None, "size": cfg.image_size}
    else:
        keys = {"model": _model_identity(cfg.model_for(modality)), "pooling": cfg.pooling,
                "max_length": cfg.max_length,
                "values": cfg.attribute_values if modality == "attribute" else None}
    return fingerprint({"modality": modality, **keys})


# -- progress ---------------------------------------------------------------------------------
def _progress(what: str, total: int) -> Progress:
    """Rows done of ``total`` and rows/s on the driver, counted as the pool's batches arrive
    (:class:`psqe_ray.core.progress.Progress`: a bar on a terminal, else a line every 10 s)."""
    return Progress(f"encode {what}", total, "rows")


def _blocks(n: int, size: int) -> int:
    """Input blocks of the pool: four per actor, and at most :data:`_BLOCK_ROWS` rows each, so
    the rows done reach the driver (its progress line) a block at a time while it runs."""
    return max(1, min(n, max(size * 4, -(-n // _BLOCK_ROWS))))


def _run_pool(table: pa.Table, udf: type, kwargs: dict, batch_size: int, cfg: EncodeConfig,
              what: str, kind: str, usage: list[dict]
              ) -> tuple[Iterator[dict], int, dict, Progress]:
    """Map ``table`` with ``udf`` on an actor pool; the actors' usage records (``kind``) are
    appended to ``usage`` as their batches arrive."""
    size, res, threads = actor_plan(cfg.workers, cfg.device)
    if "num_gpus" not in res:
        kwargs = {**kwargs, "threads": threads, "device": "cpu"}
    ds = ray.data.from_arrow(table).repartition(_blocks(table.num_rows, size))
    # max_restarts=0: Ray Data hands its pool actors their constructor arguments through the
    # object store, and Ray logs an error-level line ("has constructor arguments in the object
    # store and max_restarts > 0", ray-project/ray#53727) for every such actor that may be
    # restarted, i.e. under Ray Data's default (-1, with endless task retries); a lost actor
    # fails the encoding instead (one error line, nothing committed, a rerun starts over).
    # The pinned Ray (2.60) takes it only through the extra remote arguments, deprecated there
    # (removed in 2.64, with no named replacement yet): that notice is the one ignored here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated",
                                category=DeprecationWarning)
        out = ds.map_batches(metered(udf, kind), fn_constructor_kwargs=kwargs,
                             batch_size=batch_size, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=size), max_restarts=0,
                             **res)
    log.info("encode %s: %d rows on %d actor(s), %s each", what, table.num_rows, size, res)
    return _unwrapped(out.iter_batches(batch_format="numpy", batch_size=None), usage), size, \
        res, _progress(what, table.num_rows)


def _psqe_cause(exc: BaseException | None, depth: int = 0) -> PsqeError | None:
    """The PsqeError behind a Ray error (actor creation or task failure), if any."""
    if exc is None or depth > 10:
        return None
    if isinstance(exc, PsqeError):
        return exc
    for nxt in (getattr(exc, "cause", None), exc.__cause__, exc.__context__):
        found = _psqe_cause(nxt, depth + 1) if isinstance(nxt, BaseException) else None
        if found is not None:
            return found
    return None


def _unwrapped(batches: Iterator[dict], usage: list[dict]) -> Iterator[dict]:
    """Batches from the pool, their usage records moved to ``usage``; a failure inside an actor
    surfaces as our one-line error."""
    try:
        for batch in batches:
            usage += pop_usage(batch)
            yield batch
    except PsqeError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps actor errors in several types
        cause = _psqe_cause(exc)
        if cause is not None:
            raise cause from None
        raise PsqeError(f"encoder pool failed: {one_line(exc)}") from exc


# -- the job ----------------------------------------------------------------------------------
def encode_modality(dataset_url: str, modality: str, cfg: EncodeConfig, *,
                    storage_options: StorageOptions = None, force: bool = False) -> EncodeResult:
    """Add ``features/<modality>`` to the dataset at ``dataset_url``; see the module doc."""
    if modality not in MODALITIES:
        raise ConfigError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if not cfg.model_for(modality):
        raise ConfigError(f"no model for modality {modality!r} (set encode."
                          f"{'image_arch' if modality == 'image' else modality + '_model'})")
    ds = Dataset(dataset_url, storage_options=storage_options)
    efp = encode_fingerprint(modality, cfg)
    encoded = ds.manifest.get("meta", {}).get("encoded", {})
    if not force and encoded.get(modality) == efp and ds.has(f"features/{modality}"):
        log.info("encode %s: already encoded with these settings; skipped", modality)
        return EncodeResult(modality, skipped=True)
    counts = ds.entity_counts()
    if modality != "image":  # a bad model directory fails here, before Ray starts
        from psqe_ray.encoders.text import resolve_model_dir

        resolve_model_dir(cfg.model_for(modality), storage_options)
    new_fp = fingerprint({"base": ds.manifest["fingerprint"], "encode": {modality: efp}})
    with ray_session(), DatasetWriter(dataset_url, stage=f"encode-{modality}",
                                      fingerprint=new_fp, storage_options=storage_options,
                                      update=True) as w:
        sink = _Sink(w, f"features/{modality}")
        driver, usage = Meter("driver"), []
        if modality == "image":
            result = _encode_images(ds, cfg, counts, storage_options, sink, usage)
        else:
            result = _encode_texts(ds, modality, cfg, counts, storage_options, sink, usage)
        sink.flush()
        result.nodes = node_usage(usage, driver.take())
        w.commit(meta={"encoded": {**encoded, modality: efp},
                       f"encode_{modality}": result.as_dict()})
    return result


class _Sink:
    """Buffers feature rows and writes them as parts of about ``_CHUNK`` rows."""

    def __init__(self, writer: DatasetWriter, name: str) -> None:
        self.writer, self.name = writer, name
        self.buf: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.buf.append(table)
        self.rows += table.num_rows
        if self.rows >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.writer.write(self.name, pa.concat_tables(self.buf))
        self.buf, self.rows = [], 0


def _encode_texts(ds: Dataset, modality: str, cfg: EncodeConfig, counts: dict[str, int],
                  storage_options: StorageOptions, sink: _Sink, usage: list[dict]
                  ) -> EncodeResult:
    from psqe_ray.encoders.text import TextEncoder, resolve_model_dir

    resolve_model_dir(cfg.model_for(modality), storage_options)  # fail here, not in an actor
    texts, occ = _text_units(ds, modality, cfg)
    if not texts:
        raise NothingToEncode(ds.url, f"no {modality} text in either graph: nothing to encode")
    table = pa.table({"idx": np.arange(len(texts), dtype=np.int64),
                      "text": pa.array(texts, pa.string())})
    kwargs = {"model": cfg.model_for(modality), "pooling": cfg.pooling,
              "max_length": cfg.max_length, "batch_size": cfg.text_batch_size,
              "device": cfg.device, "storage_options": storage_options}
    batches, size, res, prog = _run_pool(table, TextEncoder, kwargs, cfg.text_batch_size * 4,
                                         cfg, f"{modality} texts", f"encode-{modality}", usage)
    vectors = None
    try:
        for b in batches:
            v = np.asarray(b["vector"], np.float32)
            if vectors is None:
                vectors = np.zeros((len(texts), v.shape[1]), np.float32)
            vectors[np.asarray(b["idx"])] = v
            prog.add(len(v))
    finally:
        prog.close()  # a failed pool leaves no half-drawn bar on a terminal
    seconds = prog.elapsed
    n_present, n_rows = 0, 0
    import scipy.sparse as sp

    for s in SIDES:
        ent, idx = occ[s]
        n = counts[s]
        for a in range(0, n, _CHUNK):
            b = min(n, a + _CHUNK)
            sel = (ent >= a) & (ent < b)
            m = sp.csr_matrix((np.ones(int(sel.sum()), np.float32), (ent[sel] - a, idx[sel])),
                              shape=(b - a, len(texts)))
            cnt = np.asarray(m.sum(axis=1)).ravel()
            vec = np.asarray(m @ vectors, np.float32) / np.maximum(cnt, 1.0)[:, None]
            present = cnt > 0
            sink.add(feature_table(s, np.arange(a, b, dtype=np.int64), vec, present))
            n_present += int(present.sum())
            n_rows += b - a
    log.info("encode %s: %d texts in %.1f s (%.1f texts/s), %d/%d entities present",
             modality, len(texts), seconds, len(texts) / max(seconds, 1e-9), n_present, n_rows)
    return EncodeResult(modality, False, rows=n_rows, present=n_present, units=len(texts),
                        seconds=round(seconds, 3), per_second=round(len(texts) / max(seconds, 1e-9), 2),
                        dim=int(vectors.shape[1]), workers=size, resources=res)


def _encode_images(ds: Dataset, cfg: EncodeConfig, counts: dict[str, int],
                   storage_options: StorageOptions, sink: _Sink, usage: list[dict]
                   ) -> EncodeResult:
    from psqe_ray.encoders.image import ImageEncoder, load_image_model

    load_image_model(cfg.image_arch, cfg.image_weights or None, storage_options)  # fail early
    table = _image_units(ds)
    with_url = int(pc.sum(pc.is_valid(table.column("url"))).as_py() or 0)
    if with_url == 0:
        raise DataError(join(ds.url, "images"), "no entity has an image: nothing to encode")
    kwargs = {"arch": cfg.image_arch, "weights": cfg.image_weights or None,
              "batch_size": cfg.image_batch_size, "image_size": cfg.image_size,
              "device": cfg.device, "storage_options": storage_options,
              "timeout": cfg.image_timeout}
    batches, size, res, prog = _run_pool(table, ImageEncoder, kwargs, cfg.image_batch_size * 2,
                                         cfg, "images", "encode-image", usage)
    failures, failed, n_present, dim = [], 0, 0, 0
    try:
        for b in batches:
            err = np.asarray(b["error"], dtype=object)
            bad = np.flatnonzero([isinstance(e, str) for e in err])  # nulls may arrive as NaN
            failed += len(bad)
            failures.extend(str(err[i]) for i in bad[:max(0, 20 - len(failures))])
            present = np.asarray(b["present"], bool)
            n_present += int(present.sum())
            vec = np.asarray(b["vector"], np.float32)
            dim = vec.shape[1]
            sides = np.asarray(b["side"], dtype=object)
            for s in SIDES:
                sel = sides == s
                if sel.any():
                    sink.add(feature_table(s, np.asarray(b["entity_id"])[sel], vec[sel],
                                            present[sel]))
            prog.add(len(vec))
    finally:
        prog.close()
    seconds = prog.elapsed
    if failed:
        log.warning("encode image: %d of %d image files unreadable or corrupt (flagged absent), "
                    "e.g. %s", failed, with_url, failures[0])
    log.info("encode image: %d images in %.1f s (%.1f images/s), %d entities present",
             with_url, seconds, with_url / max(seconds, 1e-9), n_present)
    return EncodeResult("image", False, rows=table.num_rows, present=n_present, units=with_url,
                        failed=failed, failures=failures, seconds=round(seconds, 3),
                        per_second=round(with_url / max(seconds, 1e-9), 2), dim=dim,
                        workers=size, resources=res)
