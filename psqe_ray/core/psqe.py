"""PSQE seed generation (in-process reference path) and the UVP baselines.

:class:`SeedGenerator` follows the scikit-learn shape: hyperparameters in ``__init__`` (a
:class:`~psqe_ray.config.PSQEConfig`), ``fit(pair)`` returns ``self``, learned state ends in
``_``.  Methods:

* ``psqe``: Stage I (fusion, K-means, per-cluster greedy, 4.1), Stage II (ICL fine-tuning of the
  GAT + linear branches on the Stage I seeds, global greedy sampling, MIC, 4.2), Stage III
  (neighbourhood expansion, MIC recheck, 4.3).
* ``uvp``: Type I - greedy one-to-one on one modality (EVA's visual pivoting; names or images).
* ``multimodal-greedy``: Type II - the same greedy on the fused features.

Gold links are never read here: :class:`~psqe_ray.core.graph.KGPair.gold` is left alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from psqe_ray.config import PSQEConfig
from psqe_ray.core.correction import (expand_from_candidates, expansion_candidates,
                                      mic_keep)
from psqe_ray.core.features import attribute_features, name_features, relation_features
from psqe_ray.core.fusion import fill_missing, fuse, l2_normalize
from psqe_ray.core.graph import KGPair
from psqe_ray.core.matching import greedy_one_to_one
from psqe_ray.core.sampling import (candidates_union, cluster_budgets, greedy_seeds,
                                    kmeans_assign, n_clusters, sample_cluster)
from psqe_ray.core.search import Searcher
from psqe_ray.core.train import (FEATURES, embed, joint_graph, model_inputs, pick_anchor,
                                 resolve_device, stage_rng, train_encoder)

log = logging.getLogger(__name__)

_FILLED = {"name"}  # besides precomputed feature tables; bags stay zero when absent


@dataclass
class SeedTable:
    """Rejected candidates with their reason (accepted seeds live in ``seeds_``)."""

    left: list[np.ndarray] = field(default_factory=list)
    right: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    source: list[np.ndarray] = field(default_factory=list)
    stage: list[np.ndarray] = field(default_factory=list)
    accepted: list[np.ndarray] = field(default_factory=list)
    reason: list[np.ndarray] = field(default_factory=list)

    def add(self, left, right, score, source, stage: str, accepted: bool,
            reason: str | None = None) -> None:
        """Record candidates; ``source`` is one name or an object array per row."""
        n = len(left)
        self.left.append(np.asarray(left, np.int64))
        self.right.append(np.asarray(right, np.int64))
        self.score.append(np.asarray(score, np.float32))
        self.source.append(np.full(n, source, dtype=object) if isinstance(source, str)
                           else np.asarray(source, dtype=object))
        self.stage.append(np.full(n, stage, dtype=object))
        self.accepted.append(np.full(n, accepted, dtype=bool))
        self.reason.append(np.full(n, reason, dtype=object))

    def arrays(self) -> dict[str, np.ndarray]:
        cols = ("left", "right", "score", "source", "stage", "accepted", "reason")
        if not self.left:
            return {c: np.zeros(0, dtype=object) for c in cols}
        return {c: np.concatenate(getattr(self, c)) for c in cols}


def seed_budget(budget: int, n_left: int, n_right: int) -> int:
    """Stage I's seed budget: ``budget`` when set, else (0) by size: max(1000, min(n) / 20),
    the share of the paper's 1000 seeds on a DBP15K pair (~20,000 entities per side)."""
    return int(budget) if budget > 0 else max(1000, round(min(n_left, n_right) / 20))


class SeedGenerator:
    """Pseudo-seed generator (PSQE or a UVP baseline).

    After ``fit``:
        seeds_: (left int64 (S,), right int64 (S,), score float32 (S,), source object (S,)),
            the accepted seeds in list order.
        table_: :class:`SeedTable` with the rejected candidates and why.
        stages_: list of ``{"name", "added", "removed", "count", "seconds"}``.
        stage_sets_: name -> (left, right) accepted seeds after that stage (for evaluation).
        modalities_: modalities actually used; clusters_: (left labels, right labels) or None.
    """

    def __init__(self, config: PSQEConfig | None = None) -> None:
        self.config = config or PSQEConfig()
        self.searcher = Searcher.from_config(self.config.search, self.config.seed)

    # -- features -------------------------------------------------------------------------------
    def _modalities(self, pair: KGPair) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """modality -> (x_left, present_left, x_right, present_right), raw."""
        cfg = self.config
        fc = cfg.features
        out = {}
        self.feature_sources_ = {}
        for m in cfg.modalities:
            if m in pair.left.features and m in pair.right.features:
                # a precomputed table (encoders: images, model-based text) wins over the
                # built-in n-gram / bag features
                f = {s: pair.side(s).features[m] for s in ("left", "right")}
                source = f"features/{m}"
            elif m == "relation":
                f = relation_features(pair.left, pair.right, fc.relation_top)
                source = "relation bag"
            elif m == "attribute":
                f = attribute_features(pair.left, pair.right, fc.attribute_top)
                source = "attribute bag"
            elif m == "name":
                if pair.left.names is None or pair.right.names is None:
                    continue
                f = {s: name_features(pair.side(s).names, fc.name_dim, fc.name_ngram_min,
                                      fc.name_ngram_max) for s in ("left", "right")}
                source = "character n-grams"
            else:
                continue
            (xl, pl), (xr, pr) = f["left"], f["right"]
            if not (pl.any() and pr.any()):
                log.info("modality %s: absent on one side, not used", m)
                continue
            if xl.shape[1] == xr.shape[1] and not (xl.any(axis=0) & xr.any(axis=0)).any():
                # e.g. relation bags over per-side relation ids (no relation names): every
                # cross-graph similarity is exactly 0, so the modality carries no signal here
                log.warning("modality %s: the two graphs share no feature dimension (unnamed "
                            "relations?); not used", m)
                self.skipped_[m] = "no shared feature dimension between the graphs"
                continue
            out[m] = (xl, pl, xr, pr)
            self.feature_sources_[m] = source
        if not out:
            raise ValueError(f"none of the modalities {list(cfg.modalities)} carries a signal "
                             f"shared by both graphs (skipped: {self.skipped_ or 'absent'})")
        return out

    def _prepared(self, mods) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """modality -> (left, right) normalised, missing rows filled where the paper does."""
        out = {}
        rng = stage_rng(self.config.seed, FEATURES)
        for m, (xl, pl, xr, pr) in mods.items():
            x = np.concatenate([xl, xr]).astype(np.float32, copy=False)
            present = np.concatenate([pl, pr])
            if self.config.features.fill_missing and (m in _FILLED or m not in
                                                     ("relation", "attribute")):
                x = fill_missing(x, present, rng)
            x = l2_normalize(x)
            out[m] = (x[:len(xl)], x[len(xl):])
        return out

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, pair: KGPair) -> "SeedGenerator":
        cfg = self.config
        cfg.check()
        self.stages_: list[dict] = []
        self.stage_sets_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.table_ = SeedTable()
        self.clusters_ = None
        empty = np.zeros(0, np.int64)
        self.seeds_ = (empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, object))
        t0 = time.perf_counter()
        mods, weights = self.prepare(pair)

        def features() -> dict:
            fused_l, fused_r = self._fuse(mods, weights)
            self._timed("features", t0, 0, 0)
            return {"fused_left": fused_l, "fused_right": fused_r}

        out = self._run_stage("features", features)
        fused_l, fused_r = out["fused_left"], out["fused_right"]
        budget = self.budget_ = seed_budget(cfg.stage1.budget, pair.left.n, pair.right.n)
        if cfg.method in ("uvp", "multimodal-greedy"):
            t = time.perf_counter()
            if cfg.method == "uvp":
                pivot = cfg.uvp_modality
                if pivot == "auto":
                    pivot = "image" if "image" in mods else "name" if "name" in mods else self.modalities_[0]
                if pivot not in mods:
                    raise ValueError(f"UVP pivot modality {pivot!r} is not available "
                                     f"(available: {self.modalities_})")
                self.pivot_ = pivot
                xl, xr = mods[pivot]
            else:
                xl, xr = fused_l, fused_r
            l, r, s = greedy_seeds(xl, xr, budget, searcher=self.searcher)
            name = cfg.method
            self._accept(name, l, r, s, np.full(len(l), name, dtype=object), t, added=len(l))
            return self
        return self._fit_psqe(pair, mods, weights, fused_l, fused_r)

    def prepare(self, pair: KGPair) -> tuple[dict, dict[str, float]]:
        """(modality -> (left, right) prepared vectors, fusion weights); sets ``modalities_``
        and ``skipped_`` (modality -> why it was left out)."""
        self.skipped_: dict[str, str] = {}
        mods = self._prepared(self._modalities(pair))
        self.modalities_ = sorted(mods)
        weights = {m: self.config.weights.get(m, 0.0) for m in mods}
        if not any(w > 0 for w in weights.values()):
            weights = {m: 1.0 for m in mods}
        return mods, weights

    # -- the steps the distributed path runs on Ray (same inputs, same outputs) -----------------
    def _fuse(self, mods, weights) -> tuple[np.ndarray, np.ndarray]:
        return (fuse({m: v[0] for m, v in mods.items()}, weights),
                fuse({m: v[1] for m, v in mods.items()}, weights))

    def _sample_clusters(self, sim_l, sim_r, lab_l, lab_r, budgets) -> list[tuple]:
        """Stage I greedy per cluster: a list of (left ids, right ids, scores) per cluster."""
        parts = []
        for c in range(len(budgets)):
            il, ir = np.flatnonzero(lab_l == c), np.flatnonzero(lab_r == c)
            parts.append(sample_cluster(sim_l[il], sim_r[ir], il, ir, int(budgets[c]),
                                        self.config.stage1.candidates, self.searcher))
        return parts

    def _learn(self, pair: KGPair, mods, seed_l, seed_r) -> dict[str, np.ndarray]:
        """Stage II encoder trained on the seeds: learned vectors per modality, both graphs."""
        cfg = self.config
        feats = model_inputs(mods)
        graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
        model, self.losses_ = train_encoder(feats, graph, seed_l, seed_r, pair.left.n,
                                            self.anchor_, cfg.stage2, cfg.seed,
                                            device=resolve_device(cfg.distributed.device))
        return embed(model, feats, graph)

    def _global_topk(self, learned_l, learned_r, k: int):
        """(left -> right top-k, right -> left top-k) over the whole graphs."""
        return (self.searcher.topk(learned_l, learned_r, k),
                self.searcher.topk(learned_r, learned_l, k))

    def _mic_keep(self, vec_l: np.ndarray, vec_r: np.ndarray) -> np.ndarray:
        return mic_keep(vec_l, vec_r, self.searcher)

    def _expansion_candidates(self, l0, r0, pair, vec_l, vec_r, taken_l, taken_r) -> dict:
        st = self.config.stage3
        return expansion_candidates(np.arange(len(l0)), l0, r0, pair.left.neighbours(),
                                    pair.right.neighbours(), vec_l, vec_r, taken_l, taken_r,
                                    len(l0), threshold_start=st.threshold_start,
                                    threshold_end=st.threshold_end)

    def report_extras(self) -> dict:
        """Extra entries for report.json: Stage II training seconds (and, on the Ray path,
        per-stage resources)."""
        return {"train_seconds": getattr(self, "train_seconds_", None)}

    def _run_stage(self, name: str, run) -> dict:
        """Run one stage (``run()`` returns its products: arrays later stages need).  The
        distributed path commits each stage here and skips the committed ones on a rerun."""
        return run()

    def _timed(self, name: str, t: float, added: int, removed: int) -> None:
        count = len(self.seeds_[0])
        self.stages_.append({"name": name, "added": int(added), "removed": int(removed),
                             "count": int(count), "seconds": round(time.perf_counter() - t, 3)})
        log.info("%-18s +%d -%d -> %d seeds (%.1f s)", name, added, removed, count,
                 time.perf_counter() - t)

    def _accept(self, name: str, l, r, s, src, t: float, added: int = 0, removed: int = 0) -> None:
        self.seeds_ = (np.asarray(l, np.int64), np.asarray(r, np.int64),
                       np.asarray(s, np.float32), np.asarray(src, dtype=object))
        self.stage_sets_[name] = (self.seeds_[0].copy(), self.seeds_[1].copy())
        self._timed(name, t, added, removed)

    def _mic(self, name: str, fused_l: np.ndarray, fused_r: np.ndarray) -> dict:
        t = time.perf_counter()
        l, r, s, src = self.seeds_
        keep = self._mic_keep(fused_l[l], fused_r[r])
        self.table_.add(l[~keep], r[~keep], s[~keep], src[~keep], name, False,
                        "mic: partner is not the most similar seed entity")
        self._accept(name, l[keep], r[keep], s[keep], src[keep], t, removed=int((~keep).sum()))
        return {}

    def _add(self, name: str, l, r, s, t: float) -> None:
        """Append new seeds (already in acceptance order) to the list under source ``name``."""
        l0, r0, s0, src0 = self.seeds_
        self._accept(name, np.concatenate([l0, l]), np.concatenate([r0, r]),
                     np.concatenate([s0, s]),
                     np.concatenate([src0, np.full(len(l), name, dtype=object)]), t, added=len(l))

    def _taken(self, n_left: int, n_right: int) -> tuple[np.ndarray, np.ndarray]:
        taken_l, taken_r = np.zeros(n_left, bool), np.zeros(n_right, bool)
        taken_l[self.seeds_[0]] = True
        taken_r[self.seeds_[1]] = True
        return taken_l, taken_r

    def _fit_psqe(self, pair: KGPair, mods, weights, fused_l, fused_r) -> "SeedGenerator":
        cfg = self.config
        nl, nr = pair.left.n, pair.right.n
        self.anchor_ = pick_anchor(cfg.stage2.anchor, mods)

        # ---- Stage I: K-means over both graphs, proportional per-cluster greedy (4.1.2)
        def stage1() -> dict:
            t = time.perf_counter()
            k = n_clusters(nl + nr, cfg.stage1.clusters, cfg.stage1.max_cluster_size)
            labels = kmeans_assign(np.concatenate([fused_l, fused_r]), k,
                                   iters=cfg.stage1.kmeans_iters, seed=cfg.seed)
            lab_l, lab_r = labels[:nl], labels[nl:]
            if cfg.stage1.similarity == "relation_attribute":
                ra = {m: mods[m] for m in ("relation", "attribute") if m in mods}
                if not ra:
                    raise ValueError("stage1.similarity=relation_attribute needs the relation "
                                     "or attribute modality")
                sim_l = fuse({m: v[0] for m, v in ra.items()}, weights)
                sim_r = fuse({m: v[1] for m, v in ra.items()}, weights)
            else:
                sim_l, sim_r = fused_l, fused_r
            sizes = np.bincount(lab_l, minlength=k) + np.bincount(lab_r, minlength=k)
            budgets = cluster_budgets(sizes, self.budget_)
            parts = self._sample_clusters(sim_l, sim_r, lab_l, lab_r, budgets)
            l, r, s = (np.concatenate([p[i] for p in parts]) for i in range(3))
            order = np.lexsort((r, l, -s))
            self._add("stage1-cluster", l[order], r[order], s[order], t)
            return {"cluster_left": lab_l, "cluster_right": lab_r, "cluster_budgets": budgets}

        out = self._run_stage("stage1-cluster", stage1)
        self.clusters_ = (out["cluster_left"], out["cluster_right"])
        self.cluster_budgets_ = out["cluster_budgets"]

        # ---- Stage II: ICL fine-tuning, global sampling, MIC (4.2)
        def train() -> dict:
            t = time.perf_counter()
            l, r = self.seeds_[0], self.seeds_[1]
            learned = fuse(self._learn(pair, mods, l, r), weights)
            self.train_seconds_ = round(time.perf_counter() - t, 3)
            return {"learned_left": learned[:nl], "learned_right": learned[nl:]}

        out = self._run_stage("stage2-train", train)
        learned_l, learned_r = out["learned_left"], out["learned_right"]

        def stage2_global() -> dict:
            t = time.perf_counter()
            taken_l, taken_r = self._taken(nl, nr)
            k = cfg.stage2.candidates
            lr, rl = self._global_topk(learned_l, learned_r, k)
            gl, gr, gs = candidates_union(lr, rl, len(learned_r))
            acc = greedy_one_to_one(gl, gr, gs, limit=cfg.stage2.global_budget or self.budget_,
                                    taken_left=taken_l, taken_right=taken_r)
            gl, gr, gs = gl[acc], gr[acc], gs[acc]
            order = np.lexsort((gr, gl, -gs))
            self._add("stage2-global", gl[order], gr[order], gs[order], t)
            return {}

        self._run_stage("stage2-global", stage2_global)
        if cfg.stage2.mic:
            self._run_stage("stage2-mic", lambda: self._mic("stage2-mic", fused_l, fused_r))

        # ---- Stage III: neighbourhood expansion and recheck (4.3)
        if cfg.stage3.enabled:
            def stage3() -> dict:
                t = time.perf_counter()
                vec_l = l2_normalize(np.concatenate([fused_l, learned_l], axis=1))
                vec_r = l2_normalize(np.concatenate([fused_r, learned_r], axis=1))
                l0, r0 = self.seeds_[0], self.seeds_[1]
                taken_l, taken_r = self._taken(nl, nr)
                st = cfg.stage3
                cand = self._expansion_candidates(l0, r0, pair, vec_l, vec_r, taken_l, taken_r)
                el, er, es, _ = expand_from_candidates(
                    cand, len(l0), taken_l, taken_r, threshold_start=st.threshold_start,
                    threshold_end=st.threshold_end, candidates_start=st.candidates_start,
                    candidates_end=st.candidates_end)
                self._add("stage3-expansion", el, er, es, t)
                return {}

            self._run_stage("stage3-expansion", stage3)
            if cfg.stage3.recheck:
                self._run_stage("stage3-recheck",
                                lambda: self._mic("stage3-recheck", fused_l, fused_r))
        return self
