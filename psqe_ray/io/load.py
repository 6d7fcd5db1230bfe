"""Dataset -> :class:`~psqe_ray.core.graph.KGPair` (numpy arrays for the algorithm)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from psqe_ray.core.graph import KGPair, KGSide
from psqe_ray.io.dataset import Dataset
from psqe_ray.schemas import SIDES, is_feature_table, modality_of, vectors_numpy


def _by_id(table, n: int, column: str) -> np.ndarray:
    ids = table.column("entity_id").to_numpy()
    out = np.empty(n, dtype=object)
    out[ids] = table.column(column).to_pylist()
    return out


def load_pair(ds: Dataset, *, with_gold: bool = True, features: bool = True) -> KGPair:
    """Read every table the algorithm needs, validated, into a :class:`KGPair`.

    ``features=False`` leaves the precomputed feature tables out (the Ray path's tasks read
    them block by block).

    Relation keys are the relation names when every relation of both sides has one (the two
    graphs then share a vocabulary), else ``"<side>:<id>"``.
    """
    counts = ds.entity_counts()
    entities = ds.table("entities")
    relations = ds.table("relations") if ds.has("relations") else None
    named = (relations is not None and relations.num_rows > 0
             and relations.column("name").null_count == 0)
    triples = ds.table("triples") if ds.has("triples") else None
    attributes = ds.table("attributes") if ds.has("attributes") else None
    features = {modality_of(t): ds.table(t) for t in ds.tables
                if is_feature_table(t)} if features else {}
    sides = {}
    for s in SIDES:
        n = counts[s]
        side = KGSide(n=n)
        ent = entities.filter(pc.equal(entities.column("side"), s))
        side.names = _by_id(ent, n, "name").tolist()
        if triples is not None:
            t = triples.filter(pc.equal(triples.column("side"), s))
            side.heads = t.column("head").to_numpy()
            side.relations = t.column("relation").to_numpy()
            side.tails = t.column("tail").to_numpy()
        if relations is not None:
            rel = relations.filter(pc.equal(relations.column("side"), s))
            ids = rel.column("relation_id").to_numpy()
            keys = np.empty(len(ids), dtype=object)
            if named:
                keys[ids] = rel.column("name").to_pylist()
            else:
                keys[ids] = [f"{s}:{i}" for i in ids.tolist()]
            side.relation_keys = keys
        elif len(side.relations):
            side.relation_keys = np.array([f"{s}:{i}" for i in range(int(side.relations.max()) + 1)],
                                          dtype=object)
        if attributes is not None:
            a = attributes.filter(pc.equal(attributes.column("side"), s))
            side.attr_entity = a.column("entity_id").to_numpy()
            side.attr_keys = np.asarray(a.column("attribute").to_pylist(), dtype=object)
        for mod, table in features.items():
            f = table.filter(pc.equal(table.column("side"), s))
            ids = f.column("entity_id").to_numpy()
            vec = vectors_numpy(f).astype(np.float32, copy=False)
            x = np.zeros((n, vec.shape[1]), np.float32)
            present = np.zeros(n, bool)
            x[ids] = vec
            present[ids] = f.column("present").to_numpy(zero_copy_only=False)
            side.features[mod] = (x, present)
        sides[s] = side
    gold = None
    if with_gold and ds.has("gold"):
        g = ds.table("gold")
        gold = (g.column("left_id").to_numpy(), g.column("right_id").to_numpy())
    return KGPair(sides["left"], sides["right"], gold)
