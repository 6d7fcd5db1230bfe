"""The data contract: every Arrow schema psqe-ray reads or writes, and their validation.

A *dataset* is a directory (any fsspec URL) holding one sub-directory of Parquet parts per table
and a ``_MANIFEST.json`` written last (see :mod:`psqe_ray.io.dataset`).  The tables:

=====================  ===========================================================================
table                  columns
=====================  ===========================================================================
``entities``           side, entity_id, uri (nullable), name (nullable)
``relations``          side, relation_id, uri (nullable), name (nullable)
``triples``            side, head, relation, tail
``attributes``         side, entity_id, attribute, value (nullable)
``images``             side, entity_id, url (relative to the dataset root, or absolute)
``features/<mod>``     side, entity_id, vector (fixed_size_list<float32|float16, d>), present
``gold``               left_id, right_id (evaluation only)
``seeds``              left_id, right_id, score, source, stage, accepted, reason (nullable)
``alignment``          left_id, right_id, rank, score
=====================  ===========================================================================

``side`` is ``"left"`` or ``"right"``.  Entity ids are dense per side: the entities of a side
have exactly the ids ``0 .. n_side - 1`` (assigned by a seeded permutation at import, so an id
carries no alignment signal).  Relation ids are dense per side the same way.

Every written table carries schema metadata: ``psqe.schema`` (table kind), ``psqe.version``,
``psqe.stage`` and ``psqe.fingerprint`` (of the configuration that produced it).
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psqe_ray.errors import DataError

SCHEMA_VERSION = "1"
SIDES = ("left", "right")
MODALITIES = ("image", "name", "relation", "attribute")
_MODALITY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

ENTITIES = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("entity_id", pa.int64(), nullable=False),
    pa.field("uri", pa.string()),
    pa.field("name", pa.string()),
])
RELATIONS = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("relation_id", pa.int64(), nullable=False),
    pa.field("uri", pa.string()),
    pa.field("name", pa.string()),
])
TRIPLES = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("head", pa.int64(), nullable=False),
    pa.field("relation", pa.int64(), nullable=False),
    pa.field("tail", pa.int64(), nullable=False),
])
ATTRIBUTES = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("entity_id", pa.int64(), nullable=False),
    pa.field("attribute", pa.string(), nullable=False),
    pa.field("value", pa.string()),
])
IMAGES = pa.schema([
    pa.field("side", pa.string(), nullable=False),
    pa.field("entity_id", pa.int64(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
])
GOLD = pa.schema([
    pa.field("left_id", pa.int64(), nullable=False),
    pa.field("right_id", pa.int64(), nullable=False),
])
SEEDS = pa.schema([
    pa.field("left_id", pa.int64(), nullable=False),
    pa.field("right_id", pa.int64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("accepted", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),
])
ALIGNMENT = pa.schema([
    pa.field("left_id", pa.int64(), nullable=False),
    pa.field("right_id", pa.int64(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
])
MATCHES = pa.schema([
    pa.field("left_id", pa.int64(), nullable=False),
    pa.field("right_id", pa.int64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
])

FIXED_SCHEMAS: dict[str, pa.Schema] = {
    "entities": ENTITIES,
    "relations": RELATIONS,
    "triples": TRIPLES,
    "attributes": ATTRIBUTES,
    "images": IMAGES,
    "gold": GOLD,
    "seeds": SEEDS,
    "alignment": ALIGNMENT,
    "matches": MATCHES,
}


def feature_schema(dim: int, dtype: pa.DataType = pa.float32()) -> pa.Schema:
    """Schema of ``features/<modality>``: one fixed-size vector of ``dim`` per entity.

    ``present`` is False for entities that lack the modality; their vector is all zeros and must
    not be used (filling a missing modality is the fusion step's job, not the reader's).
    """
    if dim <= 0:
        raise ValueError(f"feature dimension must be positive, got {dim}")
    if dtype not in (pa.float32(), pa.float16()):
        raise ValueError(f"feature dtype must be float32 or float16, got {dtype}")
    return pa.schema([
        pa.field("side", pa.string(), nullable=False),
        pa.field("entity_id", pa.int64(), nullable=False),
        pa.field("vector", pa.list_(pa.field("item", dtype, nullable=False), dim), nullable=False),
        pa.field("present", pa.bool_(), nullable=False),
    ])


def is_feature_table(name: str) -> bool:
    return name.startswith("features/")


def modality_of(name: str) -> str:
    return name.split("/", 1)[1]


def check_table_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a table of the contract."""
    if name in FIXED_SCHEMAS:
        return
    if is_feature_table(name) and _MODALITY_RE.match(modality_of(name)):
        return
    raise ValueError(f"unknown table name {name!r} (tables: {sorted(FIXED_SCHEMAS)} "
                     "or features/<modality>)")


def schema_for(name: str, table_schema: pa.Schema | None = None) -> pa.Schema:
    """The contract schema for table ``name``.

    For feature tables the dimension and dtype are taken from ``table_schema`` (they vary).
    """
    check_table_name(name)
    if name in FIXED_SCHEMAS:
        return FIXED_SCHEMAS[name]
    if table_schema is None or "vector" not in table_schema.names:
        raise DataError(name, "feature table has no 'vector' column")
    vtype = table_schema.field("vector").type
    if not pa.types.is_fixed_size_list(vtype):
        raise DataError(name, f"'vector' must be fixed_size_list<float32|float16, d>, got {vtype}",
                        column="vector")
    if vtype.value_type not in (pa.float32(), pa.float16()):
        raise DataError(name, f"'vector' values must be float32 or float16, got {vtype.value_type}",
                        column="vector")
    return feature_schema(vtype.list_size, vtype.value_type)


def with_metadata(table: pa.Table, name: str, *, stage: str, fingerprint: str) -> pa.Table:
    """Attach the contract metadata to ``table``."""
    meta = {
        b"psqe.schema": name.encode(),
        b"psqe.version": SCHEMA_VERSION.encode(),
        b"psqe.stage": stage.encode(),
        b"psqe.fingerprint": fingerprint.encode(),
    }
    return table.replace_schema_metadata(meta)


def conform(name: str, table: pa.Table, where: str) -> pa.Table:
    """Check ``table`` against the contract schema of ``name`` and return it in that schema.

    Accepts tables whose columns are in another order or have safely castable types (e.g. int32
    ids); rejects missing columns, unexpected columns, nulls in required columns, bad ``side``
    values, and (for feature tables) non-finite vector values.  Raises :class:`DataError`.
    """
    expected = schema_for(name, table.schema)
    missing = [f.name for f in expected if f.name not in table.schema.names]
    if missing:
        raise DataError(where, f"missing column(s) {missing}; expected {expected.names}")
    extra = [n for n in table.schema.names if n not in expected.names]
    if extra:
        raise DataError(where, f"unexpected column(s) {extra}; expected {expected.names}")
    columns = []
    for field in expected:
        col = table.column(field.name)
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(where, f"type {table.schema.field(field.name).type} cannot be "
                                f"read as {field.type}: {exc}", column=field.name) from None
        if not field.nullable and col.null_count:
            raise DataError(where, f"{col.null_count} null value(s) in a required column",
                            column=field.name)
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=expected)
    if "side" in expected.names:
        bad = pc.invert(pc.is_in(out.column("side"), value_set=pa.array(SIDES)))
        n_bad = pc.sum(bad.cast(pa.int64())).as_py() or 0
        if n_bad:
            first = out.column("side").filter(bad)[0].as_py()
            raise DataError(where, f"{n_bad} row(s) with side {first!r}; side must be "
                            "'left' or 'right'", column="side")
    if is_feature_table(name):
        check_vectors(out, where)
    return out


def feature_table(side: str, ids: np.ndarray, vec: np.ndarray, present: np.ndarray) -> pa.Table:
    """Rows of ``features/<modality>`` for one side: ids (n,), vectors (n, d), present (n,)."""
    flat = pa.array(np.ascontiguousarray(vec, np.float32).ravel())
    return pa.table({"side": pa.array([side] * len(ids), pa.string()),
                     "entity_id": pa.array(ids, pa.int64()),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, vec.shape[1]),
                     "present": pa.array(present, pa.bool_())})


def vectors_numpy(table: pa.Table, column: str = "vector") -> np.ndarray:
    """The ``vector`` column as a (rows, d) numpy array (zero-copy when possible)."""
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    values = col.values.to_numpy(zero_copy_only=False)
    return values.reshape(len(col), dim)


def check_vectors(table: pa.Table, where: str) -> None:
    """Raise :class:`DataError` if any vector holds NaN or infinity (names the first entity)."""
    if table.num_rows == 0:
        return
    vec = vectors_numpy(table)
    finite = np.isfinite(vec).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        side = table.column("side")[row].as_py()
        eid = table.column("entity_id")[row].as_py()
        raise DataError(where, f"{int((~finite).sum())} vector(s) hold NaN or infinity "
                        f"(first: side={side} entity_id={eid})", column="vector")


def side_arrays(table: pa.Table, columns: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
    """Split ``columns`` of a table with a ``side`` column into numpy arrays per side."""
    out: dict[str, dict[str, np.ndarray]] = {}
    side = table.column("side")
    for s in SIDES:
        mask = pc.equal(side, s)
        sub = table.filter(mask)
        out[s] = {c: sub.column(c).to_numpy() for c in columns}
    return out


def local_name(uri: str) -> str:
    """Readable name of a URI: its last path (or fragment) segment, percent-decoded, ``_`` -> space.

    ``http://dbpedia.org/resource/Saint-Joseph-de-Coleraine,_Quebec`` ->
    ``Saint-Joseph-de-Coleraine, Quebec``.
    """
    from urllib.parse import unquote

    tail = uri.rstrip("/")
    for sep in ("#", "/"):
        if sep in tail:
            tail = tail.rsplit(sep, 1)[1]
            break
    return unquote(tail).replace("_", " ").strip()
