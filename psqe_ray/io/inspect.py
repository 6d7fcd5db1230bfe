"""``psqe-ray inspect``: what a dataset holds, per table, side and modality, and whether it is valid."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from psqe_ray.errors import DataError
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.fs import StorageOptions
from psqe_ray.schemas import SIDES, is_feature_table, modality_of


def _side_counts(ds: Dataset, name: str) -> dict[str, int]:
    c = ds.counts(name)
    return {s: int(c.get(s, 0)) for s in SIDES}


class _Coverage:
    """Per-side counts of entities that have each raw modality, fed part by part."""

    # table -> (modality, id columns)
    TABLES = {"triples": ("relation", ("head", "tail")),
              "attributes": ("attribute", ("entity_id",)),
              "images": ("image_file", ("entity_id",))}

    def __init__(self, n: dict[str, int]) -> None:
        self.n = n
        self.seen: dict[str, dict[str, np.ndarray]] = {}
        self.named = {s: 0 for s in SIDES}

    def __call__(self, name: str, part) -> None:
        if name == "entities":
            for s in SIDES:
                sub = part.filter(pc.equal(part.column("side"), s)).column("name")
                empty = pc.sum(pc.equal(sub, "")).as_py() or 0
                self.named[s] += int(len(sub) - sub.null_count - empty)
        elif name in self.TABLES:
            modality, columns = self.TABLES[name]
            seen = self.seen.setdefault(modality, {s: np.zeros(self.n[s], bool) for s in SIDES})
            for s in SIDES:
                sub = part.filter(pc.equal(part.column("side"), s))
                for col in columns:
                    ids = sub.column(col).to_numpy()
                    seen[s][ids[(ids >= 0) & (ids < self.n[s])]] = True

    def modalities(self, has_entities: bool) -> dict[str, dict[str, int]]:
        out = {"name": dict(self.named)} if has_entities else {}
        for modality, seen in self.seen.items():
            out[modality] = {s: int(seen[s].sum()) for s in SIDES}
        return out


def inspect_dataset(url: str, *, storage_options: StorageOptions = None) -> dict[str, Any]:
    """Summarise a dataset.

    Returns a JSON-able dict with ``entities``/``triples``/``relations``/``attributes``/
    ``images`` (per side), ``gold`` (count or null), ``modalities`` (modality -> entities with
    it per side), ``dims`` (feature dimensions), ``tables`` and ``validation``
    (``{"ok": bool, "problems": [str]}``).  Modalities: ``name`` (entities with a name),
    ``relation`` (entities in at least one triple), ``attribute`` (entities with at least one
    attribute), ``image_file`` (entities with an image file) and one per feature table
    (entities whose vector is present).
    """
    ds = Dataset(url, storage_options=storage_options)
    problems: list[str] = []
    n = ds.entity_counts()
    coverage = _Coverage(n)
    try:
        ds.validate(visit=coverage)
    except DataError as exc:
        problems.append(str(exc))
    out: dict[str, Any] = {
        "url": url,
        "stage": ds.manifest.get("stage"),
        "fingerprint": ds.manifest.get("fingerprint"),
        "created": ds.manifest.get("created"),
        "entities": n,
    }
    for name in ("triples", "relations", "attributes", "images"):
        out[name] = _side_counts(ds, name)
    out["gold"] = int(ds.counts("gold").get("all", 0)) if ds.has("gold") else None
    modalities: dict[str, dict[str, int]] = {}
    dims: dict[str, int] = {}
    if not problems:
        modalities.update(coverage.modalities(ds.has("entities")))
    for name in ds.tables:
        if is_feature_table(name):
            entry = ds.manifest["tables"][name]
            pres = entry.get("present", {})
            modalities[modality_of(name)] = {s: int(pres.get(s, 0)) for s in SIDES}
            dims[modality_of(name)] = int(entry.get("dim") or 0)
    out["modalities"] = modalities
    out["dims"] = dims
    out["tables"] = {name: ds.counts(name) for name in ds.tables}
    out["validation"] = {"ok": not problems, "problems": problems}
    return out


def format_inspection(info: dict[str, Any]) -> str:
    """Human-readable table of :func:`inspect_dataset`'s result."""
    lines = [f"dataset   {info['url']}",
             f"stage     {info['stage']}   fingerprint {info['fingerprint']}   "
             f"created {info['created']}",
             "", f"{'':<22}{'left':>12}{'right':>12}"]
    for name in ("entities", "triples", "relations", "attributes", "images"):
        c = info[name]
        lines.append(f"{name:<22}{c['left']:>12,}{c['right']:>12,}")
    lines.append(f"{'gold links':<22}{info['gold'] if info['gold'] is not None else '-':>12}")
    if info["modalities"]:
        lines += ["", "modality (entities with it)"]
        for mod, c in sorted(info["modalities"].items()):
            dim = f"  d={info['dims'][mod]}" if mod in info["dims"] else ""
            lines.append(f"  {mod:<20}{c['left']:>12,}{c['right']:>12,}{dim}")
    v = info["validation"]
    lines += ["", "validation: ok" if v["ok"] else "validation: FAILED"]
    lines += [f"  - {p}" for p in v["problems"]]
    return "\n".join(lines)
