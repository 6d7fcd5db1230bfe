"""Cross-table checks of the data contract, in bounded memory.

:class:`ContractChecker` is fed tables part by part (as they are written or read) and keeps only
O(entities) state: a seen-bitmap per unique-id column and per side, min/max per reference column.
Because ids are dense per side (``0 .. n-1``), a reference is valid iff it is in range, so the
final check needs no join.  The writer and the reader use the same checker, so a dataset that
was committed is exactly a dataset that reads back valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psqe_ray.core.ids import duplicates
from psqe_ray.errors import DataError
from psqe_ray.schemas import SIDES, is_feature_table

# (column, what it references). ``"entities"`` and ``"relations"`` refer to ids of the row's side;
# ``"left"`` / ``"right"`` refer to the entities of that side (for tables without a side column).
_REFS: dict[str, list[tuple[str, str]]] = {
    "triples": [("head", "entities"), ("tail", "entities"), ("relation", "relations")],
    "attributes": [("entity_id", "entities")],
    "images": [("entity_id", "entities")],
    "features": [("entity_id", "entities")],
    "gold": [("left_id", "left"), ("right_id", "right")],
    "seeds": [("left_id", "left"), ("right_id", "right")],
    "alignment": [("left_id", "left"), ("right_id", "right")],
    "matches": [("left_id", "left"), ("right_id", "right")],
}
# Tables whose id column must be unique per side; entities and relations must also be dense.
_UNIQUE: dict[str, str] = {"entities": "entity_id", "relations": "relation_id",
                           "features": "entity_id"}


def _kind(name: str) -> str:
    return "features" if is_feature_table(name) else name


@dataclass
class _Unique:
    where: str
    column: str
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    count: int = 0

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if ids.min() < 0:
            raise DataError(self.where, f"negative id {int(ids.min())}", column=self.column)
        top = int(ids.max()) + 1
        if top > len(self.seen):
            grown = np.zeros(max(top, 2 * len(self.seen)), dtype=bool)
            grown[:len(self.seen)] = self.seen
            self.seen = grown
        dup = duplicates(ids, self.seen)
        if len(dup):
            raise DataError(self.where, f"duplicate id {int(dup[0])} ({len(dup)} duplicated)",
                            column=self.column)
        uniq = np.unique(ids)
        self.seen[uniq] = True
        self.count += len(uniq)

    def check_dense(self) -> None:
        n = self.count
        if n and not self.seen[:n].all():
            gap = int(np.flatnonzero(~self.seen[:n])[0])
            raise DataError(self.where, f"ids must be dense 0..{n - 1} per side; id {gap} is "
                            "missing", column=self.column)


@dataclass
class _Range:
    where: str
    column: str
    target: str
    lo: int = 0
    hi: int = -1
    rows: int = 0

    def add(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if self.rows == 0:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.rows += len(ids)


class ContractChecker:
    """Accumulates per-table statistics and checks references across tables.

    Args:
        root: the dataset URL, used in error messages (``<root>/<table>``).
        entity_counts: known entity counts per side, when the entities table is not part of
            what is checked (e.g. a seeds output referring to an input dataset).
        require_graph: whether ``entities`` (both sides non-empty) must be present.
    """

    def __init__(self, root: str, *, entity_counts: dict[str, int] | None = None,
                 require_graph: bool = True) -> None:
        self.root = root
        self.require_graph = require_graph
        self.entity_counts = dict(entity_counts or {})
        self.rows: dict[str, dict[str, int]] = {}
        self.present: dict[str, dict[str, int]] = {}
        self.dims: dict[str, int] = {}
        self._unique: dict[tuple[str, str], _Unique] = {}
        self._ranges: dict[tuple[str, str, str], _Range] = {}

    def where(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def add(self, name: str, table: pa.Table) -> None:
        """Record one part of table ``name`` (already conformed to its schema)."""
        kind = _kind(name)
        per_side = self.rows.setdefault(name, {})
        if "side" in table.schema.names:
            groups = [(s, table.filter(pc.equal(table.column("side"), s))) for s in SIDES]
        else:
            groups = [("all", table)]
        for side, sub in groups:
            per_side[side] = per_side.get(side, 0) + sub.num_rows
            if kind == "features":
                self.dims[name] = table.schema.field("vector").type.list_size
                pres = self.present.setdefault(name, {})
                pres[side] = pres.get(side, 0) + int(pc.sum(sub.column("present")).as_py() or 0)
            if kind in _UNIQUE:
                col = _UNIQUE[kind]
                key = (name, side)
                if key not in self._unique:
                    self._unique[key] = _Unique(f"{self.where(name)} (side {side})", col)
                self._unique[key].add(sub.column(col).to_numpy())
            for col, target in _REFS.get(kind, []):
                key = (name, side, col)
                if key not in self._ranges:
                    self._ranges[key] = _Range(self.where(name), col, target)
                self._ranges[key].add(sub.column(col).to_numpy())

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.rows.get(name, {}))

    def finish(self) -> None:
        """Run the cross-table checks; raise :class:`DataError` on the first problem."""
        for (name, side), uniq in self._unique.items():
            if name in ("entities", "relations"):
                uniq.check_dense()
        n_ent = {s: self.rows.get("entities", {}).get(s, 0) for s in SIDES}
        if "entities" not in self.rows:
            if self.require_graph:
                raise DataError(self.where("entities"), "the dataset has no entities table")
            n_ent = {s: self.entity_counts.get(s, 0) for s in SIDES}
        elif self.require_graph:
            empty = [s for s in SIDES if n_ent[s] == 0]
            if empty:
                raise DataError(self.where("entities"), f"empty graph: no {' or '.join(empty)} "
                                "entities")
        n_rel = {s: self.rows.get("relations", {}).get(s, 0) for s in SIDES}
        for (name, side, col), rng in self._ranges.items():
            if rng.rows == 0:
                continue
            target = rng.target
            if target == "relations":
                if "relations" not in self.rows:
                    if rng.lo < 0:
                        raise DataError(rng.where, f"negative relation id {rng.lo}", column=col)
                    continue
                n, what = n_rel[side], f"{side} relations"
            elif target == "entities":
                n, what = n_ent[side], f"{side} entities"
            else:
                n, what = n_ent[target], f"{target} entities"
            if "entities" not in self.rows and target != "relations" and not self.entity_counts:
                continue
            if rng.lo < 0 or rng.hi >= n:
                first = rng.lo if rng.lo < 0 else rng.hi
                raise DataError(rng.where, f"reference to unknown {what}: id {first} "
                                f"(known ids 0..{n - 1})", column=col)
