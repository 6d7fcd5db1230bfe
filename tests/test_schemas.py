"""The data contract: schema conformance, vector checks, dense ids, cross-table references."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from psqe_ray.errors import DataError
from psqe_ray.schemas import (ENTITIES, conform, feature_schema, local_name, schema_for,
                              with_metadata)
from psqe_ray.validation import ContractChecker


def _entities(side: str, ids: list[int]) -> pa.Table:
    return pa.table({"side": [side] * len(ids), "entity_id": pa.array(ids, pa.int64()),
                     "uri": [f"u{i}" for i in ids], "name": [f"n{i}" for i in ids]})


def _features(side: str, vecs: np.ndarray, present=None) -> pa.Table:
    n, d = vecs.shape
    present = np.ones(n, bool) if present is None else present
    return pa.Table.from_arrays(
        [pa.array([side] * n), pa.array(np.arange(n, dtype=np.int64)),
         pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1).astype(np.float32)), d),
         pa.array(present)], schema=feature_schema(d))


def test_conform_casts_reorders_and_keeps_contract_types():
    t = pa.table({"name": ["a"], "uri": ["x"], "entity_id": pa.array([0], pa.int32()),
                  "side": ["left"]})
    out = conform("entities", t, "mem://t")
    assert out.schema.equals(ENTITIES)
    assert out.column("entity_id").type == pa.int64()


@pytest.mark.parametrize("table, needle", [
    (pa.table({"side": ["left"], "entity_id": [0], "uri": ["x"]}), "missing column(s) ['name']"),
    (pa.table({"side": ["left"], "entity_id": [0], "uri": ["x"], "name": ["n"], "z": [1]}),
     "unexpected column(s) ['z']"),
    (pa.table({"side": ["up"], "entity_id": [0], "uri": ["x"], "name": ["n"]}), "side 'up'"),
    (pa.table({"side": ["left"], "entity_id": pa.array([None], pa.int64()), "uri": ["x"],
               "name": ["n"]}), "null value(s) in a required column"),
    (pa.table({"side": ["left"], "entity_id": ["abc"], "uri": ["x"], "name": ["n"]}),
     "cannot be read as int64"),
])
def test_conform_rejects_with_location(table, needle):
    with pytest.raises(DataError) as exc:
        conform("entities", table, "mem://ds/entities")
    assert needle in str(exc.value)
    assert str(exc.value).startswith("mem://ds/entities")


def test_feature_vectors_nan_and_dtype():
    vecs = np.ones((3, 4), np.float32)
    assert conform("features/image", _features("left", vecs), "w").num_rows == 3
    vecs[1, 2] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinity \(first: side=left entity_id=1\)"):
        conform("features/image", _features("left", vecs), "w")
    bad = pa.table({"side": ["left"], "entity_id": [0], "vector": [[1.0, 2.0]], "present": [True]})
    with pytest.raises(DataError, match="fixed_size_list"):
        conform("features/image", bad, "w")
    half = feature_schema(8, pa.float16())
    assert schema_for("features/text", half).field("vector").type.value_type == pa.float16()


def test_metadata_round_trip():
    t = with_metadata(_entities("left", [0]), "entities", stage="import", fingerprint="abc")
    assert t.schema.metadata[b"psqe.schema"] == b"entities"
    assert t.schema.metadata[b"psqe.fingerprint"] == b"abc"


def _checker_with_entities(nl: int, nr: int) -> ContractChecker:
    c = ContractChecker("mem://ds")
    c.add("entities", _entities("left", list(range(nl))))
    c.add("entities", _entities("right", list(range(nr))))
    return c


def test_checker_accepts_valid_and_counts():
    c = _checker_with_entities(3, 2)
    c.add("triples", pa.table({"side": ["left", "right"], "head": [0, 1], "relation": [0, 0],
                               "tail": [2, 0]}))
    c.add("gold", pa.table({"left_id": [0, 1], "right_id": [1, 0]}))
    c.finish()
    assert c.counts("entities") == {"left": 3, "right": 2}
    assert c.counts("gold") == {"all": 2}


def test_checker_duplicate_ids_across_parts():
    c = _checker_with_entities(3, 2)
    with pytest.raises(DataError, match="duplicate id 1"):
        c.add("entities", _entities("left", [1]))


def test_checker_dense_ids():
    c = ContractChecker("mem://ds")
    c.add("entities", _entities("left", [0, 2]))
    c.add("entities", _entities("right", [0]))
    with pytest.raises(DataError, match="dense 0..1 per side; id 1 is missing"):
        c.finish()


@pytest.mark.parametrize("name, table, needle", [
    ("triples", pa.table({"side": ["right"], "head": [0], "relation": [0], "tail": [2]}),
     "triples [tail]: reference to unknown right entities: id 2"),
    ("gold", pa.table({"left_id": [3], "right_id": [0]}),
     "gold [left_id]: reference to unknown left entities: id 3"),
    ("attributes", pa.table({"side": ["left"], "entity_id": [-1], "attribute": ["a"],
                             "value": ["v"]}), "reference to unknown left entities: id -1"),
])
def test_checker_dangling_references(name, table, needle):
    c = _checker_with_entities(3, 2)
    c.add(name, table)
    with pytest.raises(DataError) as exc:
        c.finish()
    assert needle in str(exc.value)


def test_checker_empty_graph():
    c = ContractChecker("mem://ds")
    c.add("entities", _entities("left", [0]))
    with pytest.raises(DataError, match="empty graph: no right entities"):
        c.finish()


def test_local_name_decodes():
    assert local_name("http://fr.dbpedia.org/resource/Saint-%C3%89tienne_(ville)") == \
        "Saint-Étienne (ville)"
    assert local_name("http://xmlns.com/foaf/0.1/name") == "name"
    assert local_name("http://example.org/ont#birthPlace") == "birthPlace"
