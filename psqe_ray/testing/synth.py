"""Synthetic KG pairs with a planted alignment, generated in chunks (bounded memory).

Model.  A latent universe of ``S + 2D`` entities: ``S = round(N * shared)`` entities that exist
in both graphs and ``D = N - S`` dangling entities private to each side, so each side has exactly
``N`` entities and there are ``S`` gold links.  Every latent entity has

* a *type* ``t`` in ``0..T-1`` (``T`` grows as ``sqrt(N)``), which gives the features a cluster
  structure and biases the relations of its edges;
* a degree weight ``w ~ Pareto(gamma - 1)``: latent edges are drawn Chung-Lu style (both
  endpoints proportional to ``w``), so degrees are heavy-tailed with exponent ``gamma``;
* a name made of random syllables, a bag of attributes with values, and one latent vector per
  feature modality (``centre[t] + N(0, I)``), plus a small latent picture for image files.

Each side sees a noisy copy: every latent edge is dropped independently per side
(``edge_dropout``), every attribute likewise (``attr_dropout``); names get per-character
substitutions (``name_noise``) and may be missing (``name_missing``) or, on one side, be opaque
ids such as Wikidata's Q-numbers (``opaque_names``); feature vectors get
Gaussian noise (``noise`` x unit variance) and may be absent (``missing``); a share of entities
(``image_files``) get a real PNG whose picture is the latent one plus per-side pixel noise.
Entity and relation ids are shuffled per side by seeded permutations.

Determinism: every random draw comes from ``numpy.random.default_rng([seed, purpose, chunk])``,
so the same configuration (seed and chunk size included) gives the same tables.  Memory is
O(N) small arrays (id permutations, degree weights, types) plus one chunk of rows at a time.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from psqe_ray.config import fingerprint
from psqe_ray.errors import ConfigError
from psqe_ray.io.writer import DatasetWriter
from psqe_ray.io.fs import StorageOptions
from psqe_ray.schemas import SIDES, feature_schema

log = logging.getLogger(__name__)

# Purposes: the second element of every rng key, so that streams never overlap.
_TYPES, _WEIGHTS, _EDGES, _NAMES, _NAME_NOISE, _ATTRS, _FEATURES, _PICTURES, _PERM = range(9)
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + ["an", "el", "in", "or", "us"]
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


@dataclass(frozen=True)
class FeatureSpec:
    """One precomputed feature modality: ``dim``-d vectors with ``noise`` and ``missing`` rate."""

    modality: str = "image"
    dim: int = 64
    noise: float = 0.6
    missing: float = 0.3

    @classmethod
    def parse(cls, text: str) -> "FeatureSpec":
        """Parse ``MOD[:DIM[:NOISE[:MISSING]]]``, e.g. ``image:64:0.5:0.3``."""
        parts = text.split(":")
        if not parts[0] or len(parts) > 4:
            raise ConfigError(f"--feature {text!r}: expected MOD[:DIM[:NOISE[:MISSING]]]")
        try:
            kw = {"modality": parts[0]}
            if len(parts) > 1:
                kw["dim"] = int(parts[1])
            if len(parts) > 2:
                kw["noise"] = float(parts[2])
            if len(parts) > 3:
                kw["missing"] = float(parts[3])
        except ValueError:
            raise ConfigError(f"--feature {text!r}: DIM must be an integer, NOISE and MISSING "
                              "numbers") from None
        return cls(**kw)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic pair (see the module docstring for the model)."""

    entities: int = 2000
    seed: int = 0
    shared: float = 0.8
    avg_degree: float = 6.0
    degree_exponent: float = 2.2
    relations: int = 40
    edge_dropout: float = 0.2
    attributes: int = 30
    attrs_per_entity: float = 3.0
    attr_dropout: float = 0.2
    name_noise: float = 0.15
    name_missing: float = 0.0
    opaque_names: str = ""        # "left" / "right": that side's names are opaque ids (Q123..)
    features: tuple[FeatureSpec, ...] = field(default_factory=lambda: (FeatureSpec(),))
    image_files: float = 0.05
    image_size: int = 32
    chunk_size: int = 100_000

    def check(self) -> None:
        def rate(name: str, v: float, hi: float = 1.0) -> None:
            if not 0.0 <= v <= hi:
                raise ConfigError(f"{name} must be in [0, {hi}], got {v}")
        if self.entities < 2:
            raise ConfigError(f"entities must be at least 2, got {self.entities}")
        for n in ("shared", "edge_dropout", "attr_dropout", "name_noise", "name_missing",
                  "image_files"):
            rate(n, getattr(self, n))
        if self.shared <= 0:
            raise ConfigError("shared must be > 0 (no shared entities means no alignment)")
        if self.avg_degree <= 0 or self.degree_exponent <= 2.0:
            raise ConfigError("avg_degree must be > 0 and degree_exponent > 2")
        if self.relations < 1 or self.attributes < 1 or self.attrs_per_entity < 0:
            raise ConfigError("relations and attributes must be >= 1, attrs_per_entity >= 0")
        if self.opaque_names not in ("", "left", "right"):
            raise ConfigError(f"opaque_names must be '', 'left' or 'right', got "
                              f"{self.opaque_names!r}")
        if self.chunk_size < 1 or self.image_size < 4:
            raise ConfigError("chunk_size must be >= 1 and image_size >= 4")
        seen = set()
        for f in self.features:
            if f.dim < 1 or f.noise < 0 or not 0 <= f.missing <= 1:
                raise ConfigError(f"feature {f.modality}: dim >= 1, noise >= 0, missing in [0,1]")
            if f.modality in seen:
                raise ConfigError(f"feature {f.modality} given twice")
            seen.add(f.modality)


def _rng(seed: int, purpose: int, *rest: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, *rest])


class _Universe:
    """The O(N) state: latent-to-side id maps, degree weights, types."""

    def __init__(self, cfg: SynthConfig) -> None:
        n = cfg.entities
        self.n = n
        self.s = max(1, min(n, round(n * cfg.shared)))
        self.d = n - self.s
        self.size = self.s + 2 * self.d
        self.n_types = max(4, int(round(math.sqrt(n) / 2)))
        rng = _rng(cfg.seed, _PERM)
        # left ids of latent [0, S+D); right ids of latent [0, S) and [S+D, S+2D)
        self.left_id = rng.permutation(n).astype(np.int64)
        self.right_id = rng.permutation(n).astype(np.int64)
        self.rel_id = {s: rng.permutation(cfg.relations).astype(np.int64) for s in SIDES}
        self.types = np.empty(self.size, dtype=np.int32)
        self.weights = np.empty(self.size, dtype=np.float64)
        for c, (a, b) in enumerate(_chunks(self.size, cfg.chunk_size)):
            self.types[a:b] = _rng(cfg.seed, _TYPES, c).integers(0, self.n_types, b - a)
            u = _rng(cfg.seed, _WEIGHTS, c).random(b - a)
            self.weights[a:b] = (1.0 - u) ** (-1.0 / (cfg.degree_exponent - 1.0))
        # Cap hubs at sqrt(total weight) (Chung-Lu's condition for probabilities <= 1).
        np.minimum(self.weights, math.sqrt(self.weights.sum()), out=self.weights)
        self.cum_weights = np.cumsum(self.weights)

    def side_ids(self, side: str, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Side ids of latent entities and a mask of which exist on ``side``."""
        if side == "left":
            on = latent < self.s + self.d
            ids = np.where(on, self.left_id[np.minimum(latent, self.n - 1)], -1)
        else:
            shared = latent < self.s
            dangling = latent >= self.s + self.d
            on = shared | dangling
            idx = np.where(shared, latent, latent - self.d).clip(0, self.n - 1)
            ids = np.where(on, self.right_id[idx], -1)
        return ids.astype(np.int64), on


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, total, size):
        yield a, min(total, a + size)


def _words(rng: np.random.Generator, count: int, lo: int, hi: int) -> list[str]:
    syl = rng.integers(0, len(_SYLLABLES), size=(count, hi))
    lens = rng.integers(lo, hi + 1, size=count)
    return ["".join(_SYLLABLES[j] for j in row[:k]) for row, k in zip(syl.tolist(), lens.tolist())]


def _latent_names(cfg: SynthConfig, c: int, count: int) -> list[str]:
    rng = _rng(cfg.seed, _NAMES, c)
    first = _words(rng, count, 2, 3)
    second = _words(rng, count, 2, 4)
    third = _words(rng, count, 1, 3)
    n_words = rng.integers(1, 4, size=count)
    out = []
    for k, a, b, d in zip(n_words.tolist(), first, second, third):
        out.append(a if k == 1 else f"{a} {b}" if k == 2 else f"{a} {b} {d}")
    return out


def _noisy_names(names: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Substitute each letter with a random one with probability ``rate`` (vectorised)."""
    if rate <= 0 or not names:
        return names
    joined = "\n".join(names).encode("ascii")
    buf = np.frombuffer(joined, dtype=np.uint8).copy()
    hit = (rng.random(len(buf)) < rate) & (buf != ord("\n")) & (buf != ord(" "))
    buf[hit] = _LETTERS[rng.integers(0, len(_LETTERS), int(hit.sum()))]
    return buf.tobytes().decode("ascii").split("\n")


def _zipf_probs(k: int) -> np.ndarray:
    p = 1.0 / np.arange(1, k + 1)
    return p / p.sum()


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def _entity_chunk(cfg: SynthConfig, u: _Universe, c: int, a: int, b: int,
                  writer: DatasetWriter, centres: dict[str, np.ndarray]) -> None:
    latent = np.arange(a, b, dtype=np.int64)
    names = _latent_names(cfg, c, b - a)
    # attributes: latent bag per entity, values per (entity, attribute)
    rng_a = _rng(cfg.seed, _ATTRS, c)
    n_attr = rng_a.poisson(cfg.attrs_per_entity, size=b - a)
    attr_owner = np.repeat(latent, n_attr)
    attr_type = rng_a.choice(cfg.attributes, size=len(attr_owner), p=_zipf_probs(cfg.attributes))
    attr_value = rng_a.integers(0, 10_000, size=len(attr_owner))
    latent_feats = {}
    for m, spec in enumerate(cfg.features):
        rng_f = _rng(cfg.seed, _FEATURES, m, c)
        latent_feats[spec.modality] = (centres[spec.modality][u.types[a:b]]
                                       + rng_f.standard_normal((b - a, spec.dim), np.float32))
    rng_p = _rng(cfg.seed, _PICTURES, c)
    for k, side in enumerate(SIDES):
        ids, on = u.side_ids(side, latent)
        sel = np.flatnonzero(on)
        if len(sel) == 0:
            continue
        rng_s = _rng(cfg.seed, _NAME_NOISE, k, c)
        side_names = _noisy_names([names[i] for i in sel.tolist()], cfg.name_noise, rng_s)
        if cfg.opaque_names == side:  # e.g. Wikidata Q-numbers: no signal shared with the other
            side_names = [f"Q{q}" for q in rng_s.integers(1, 10**7, len(sel)).tolist()]
        missing = rng_s.random(len(sel)) < cfg.name_missing
        writer.write("entities", pa.table({
            "side": pa.array([side] * len(sel), pa.string()),
            "entity_id": ids[sel],
            "uri": pa.array([f"synth://{side}/entity/{i}" for i in ids[sel].tolist()], pa.string()),
            "name": pa.array([None if m else n for n, m in zip(side_names, missing.tolist())],
                             pa.string())}))
        a_on = on[attr_owner - a] & (rng_s.random(len(attr_owner)) >= cfg.attr_dropout)
        a_ids = ids[attr_owner[a_on] - a]
        writer.write("attributes", pa.table({
            "side": pa.array([side] * len(a_ids), pa.string()),
            "entity_id": a_ids,
            "attribute": pa.array([f"attr_{t}" for t in attr_type[a_on].tolist()], pa.string()),
            "value": pa.array([str(v) for v in attr_value[a_on].tolist()], pa.string())}))
        for m, spec in enumerate(cfg.features):
            rng_f = _rng(cfg.seed, _FEATURES, m, c, k + 1)
            vec = latent_feats[spec.modality][sel] + spec.noise * rng_f.standard_normal(
                (len(sel), spec.dim), np.float32)
            present = rng_f.random(len(sel)) >= spec.missing
            vec[~present] = 0.0
            writer.write(f"features/{spec.modality}", pa.Table.from_arrays(
                [pa.array([side] * len(sel), pa.string()), pa.array(ids[sel]),
                 pa.FixedSizeListArray.from_arrays(pa.array(vec.astype(np.float32).reshape(-1)),
                                                   spec.dim),
                 pa.array(present)], schema=feature_schema(spec.dim)))
    # image files: latent 8x8 picture coloured by type, per-side pixel noise, upscaled
    if cfg.image_files > 0:
        pics = rng_p.integers(0, 256, size=(b - a, 8, 8, 3)).astype(np.int16)
        tint = (u.types[a:b] * 97 % 256)[:, None, None, None]
        pics = (pics // 2 + tint // 2)
        scale = max(1, cfg.image_size // 8)
        for k, side in enumerate(SIDES):
            ids, on = u.side_ids(side, latent)
            rng_i = _rng(cfg.seed, _PICTURES, c, k + 1)
            chosen = np.flatnonzero(on & (rng_i.random(b - a) < cfg.image_files))
            urls = []
            for i in chosen.tolist():
                noisy = pics[i] + rng_i.integers(-24, 25, size=pics[i].shape)
                img = np.kron(noisy.clip(0, 255).astype(np.uint8),
                              np.ones((scale, scale, 1), dtype=np.uint8))
                urls.append(writer.put_file(f"images/{side}/{int(ids[i])}.png", _png(img)))
            writer.write("images", pa.table({
                "side": pa.array([side] * len(chosen), pa.string()),
                "entity_id": ids[chosen], "url": pa.array(urls, pa.string())}))
    shared = latent[latent < u.s]
    if len(shared):
        writer.write("gold", pa.table({"left_id": u.left_id[shared], "right_id": u.right_id[shared]}))


def _edge_chunk(cfg: SynthConfig, u: _Universe, c: int, count: int,
                writer: DatasetWriter) -> None:
    rng = _rng(cfg.seed, _EDGES, c)
    total = u.cum_weights[-1]
    head = np.searchsorted(u.cum_weights, rng.random(count) * total, side="right")
    tail = np.searchsorted(u.cum_weights, rng.random(count) * total, side="right")
    head = head.clip(0, u.size - 1)
    tail = tail.clip(0, u.size - 1)
    # relation: a Zipf draw shifted by the head's type, so relations carry type information
    rel = (rng.choice(cfg.relations, size=count, p=_zipf_probs(cfg.relations))
           + u.types[head] * 7) % cfg.relations
    keep = head != tail
    for k, side in enumerate(SIDES):
        h_ids, h_on = u.side_ids(side, head)
        t_ids, t_on = u.side_ids(side, tail)
        on = keep & h_on & t_on & (rng.random(count) >= cfg.edge_dropout)
        writer.write("triples", pa.table({
            "side": pa.array([side] * int(on.sum()), pa.string()),
            "head": h_ids[on], "relation": u.rel_id[side][rel[on]], "tail": t_ids[on]}))


def synthesize(url: str, cfg: SynthConfig = SynthConfig(), *,
               storage_options: StorageOptions = None) -> dict:
    """Generate a synthetic pair into ``url``; returns the manifest."""
    cfg.check()
    t0 = time.monotonic()
    fp = fingerprint({"generator": "psqe-ray/synth/1", **asdict(cfg)})
    with DatasetWriter(url, stage="synth", fingerprint=fp,
                       storage_options=storage_options) as writer:
        if writer.committed:
            log.info("%s already holds this synthetic pair (fingerprint %s)", url, fp)
            from psqe_ray.io.dataset import Dataset
            return Dataset(url, storage_options=storage_options).manifest
        u = _Universe(cfg)
        centres = {}
        for m, spec in enumerate(cfg.features):
            centres[spec.modality] = 1.5 * _rng(cfg.seed, _FEATURES, m).standard_normal(
                (u.n_types, spec.dim), np.float32)
        rel_names = _words(_rng(cfg.seed, _NAMES, 1 << 30), cfg.relations, 2, 3)
        for side in SIDES:
            order = np.argsort(u.rel_id[side])
            writer.write("relations", pa.table({
                "side": pa.array([side] * cfg.relations, pa.string()),
                "relation_id": np.arange(cfg.relations, dtype=np.int64),
                "uri": pa.array([f"synth://relation/{r}" for r in order.tolist()], pa.string()),
                "name": pa.array([f"has {rel_names[r]}" for r in order.tolist()], pa.string())}))
        chunks = list(_chunks(u.size, cfg.chunk_size))
        for c, (a, b) in enumerate(chunks):
            _entity_chunk(cfg, u, c, a, b, writer, centres)
            log.info("synth: entities %d/%d (%.1f s)", b, u.size, time.monotonic() - t0)
        n_edges = int(round(cfg.avg_degree * u.size / 2))
        edge_chunks = list(_chunks(n_edges, cfg.chunk_size))
        for c, (a, b) in enumerate(edge_chunks):
            _edge_chunk(cfg, u, c, b - a, writer)
            if c % 10 == 9 or c == len(edge_chunks) - 1:
                log.info("synth: edges %d/%d (%.1f s)", b, n_edges, time.monotonic() - t0)
        manifest = writer.commit(meta={
            "generator": "psqe-ray/synth/1", "config": asdict(cfg),
            "latent": {"shared": u.s, "dangling_per_side": u.d, "types": u.n_types,
                       "edges": n_edges},
            "synth_seconds": round(time.monotonic() - t0, 3)})
    log.info("synthesised %d entities per side into %s in %.1f s", cfg.entities, url,
             time.monotonic() - t0)
    return manifest
