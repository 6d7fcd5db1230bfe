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
from psqe_ray.core.correction import (expand_spread, expansion_candidates,
                                      mic_keep)
from psqe_ray.core.blocks import (SIDES, Prep, block_stats, centred_stats, dense, fill_stats,
                                  kmeans, side_means)
from psqe_ray.core.features import (Source, attribute_incidence, raw_rows,
                                    relation_incidence)
from psqe_ray.core.fusion import fuse, l2_normalize
from psqe_ray.core.graph import KGPair
from psqe_ray.core.matching import greedy_one_to_one
from psqe_ray.core.sampling import (candidates_union, cluster_budgets, greedy_seeds,
                                    n_clusters, sample_cluster_counted)
from psqe_ray.core.score_histogram import histogram_record, score_counts
from psqe_ray.core.search import Searcher
from psqe_ray.core.signal import MIN_EFFECT, signal_test
from psqe_ray.core.step_meter import StepMeter
from psqe_ray.core.topk import topk_search
from psqe_ray.core.train import (embed_fused, joint_graph, model_inputs, pick_anchor,
                                 resolve_device, torch_threads, train_encoder)

log = logging.getLogger(__name__)

_TEXT = ("name", "relation", "attribute")  # what a text model encodes (encode --model)
_FILLED = {"name"}  # besides precomputed feature tables; bags stay zero when absent
# the global top-k's progress labels: shards done left->right and right->left (both engines),
# or blocks done of the one pass both ways (in-process, when the search is exact)
TOPK_LABELS = ("stage2-global top-k left->right", "stage2-global top-k right->left",
               "stage2-global top-k both ways")


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
        stages_: list of ``{"name", "added", "removed", "count", "seconds"}``, with
            ``scores`` (:func:`~psqe_ray.core.score_histogram.histogram_record`: the score
            counts of the pairs the stage accepted and rejected) where the stage decides on
            candidates.
        profile_: list of ``{"step", "seconds", "peak_rss_bytes", "peak_rss_sampled"}`` per
            stage run (or loaded from its commit) by this fit (:class:`StepMeter`).
        stage_sets_: name -> (left, right) accepted seeds after that stage (for evaluation).
        modalities_: modalities actually used; clusters_: (left labels, right labels) or None.
    """

    def __init__(self, config: PSQEConfig | None = None) -> None:
        self.config = config or PSQEConfig()
        self.searcher = Searcher.from_config(self.config.search, self.config.seed)

    # -- features: planned once, made block by block (psqe_ray.core.blocks) ---------------------
    def plan(self, pair: KGPair, tables: dict[str, int]) -> dict[str, Source]:
        """modality -> how its raw rows are made.  ``tables``: precomputed feature tables of
        the dataset (modality -> dimension); they win over the built-in n-gram / bag features."""
        fc = self.config.features
        out: dict[str, Source] = {}
        for m in self.config.modalities:
            if m in tables:
                out[m] = Source(m, "table", f"features/{m}", int(tables[m]))
            elif m in ("relation", "attribute"):
                incidence = relation_incidence if m == "relation" else attribute_incidence
                dim, inc = incidence(pair.left, pair.right,
                                     fc.relation_top if m == "relation" else fc.attribute_top)
                out[m] = Source(m, "bag", f"{m} bag", max(1, dim), inc)
            elif m == "name" and pair.left.names is not None and pair.right.names is not None:
                out[m] = Source(m, "name", "character n-grams", fc.name_dim)
        return out

    def fills(self, m: str) -> bool:
        """Whether modality ``m``'s absent rows get the random fill (bags stay zero)."""
        return self.config.features.fill_missing and (m in _FILLED or m not in
                                                      ("relation", "attribute"))

    def centres(self, m: str, src: "Source") -> bool:
        """Whether modality ``m``'s rows lose their graph's mean before normalising: a text
        model's vectors (a feature table of name / relation / attribute).  A sentence encoder
        puts every text of a graph in a narrow cone around a common direction, with an offset
        of its own per language; what is left after removing each graph's mean is what tells
        its entities apart (Libovicky et al. 2020, on multilingual encoders' language means)."""
        return self.config.features.centre_text and src.kind == "table" and m in _TEXT

    def needs_stats(self, m: str, src: "Source") -> bool:
        """Whether a block's :func:`block_stats` must carry its chunk sums (fill or centre)."""
        return self.fills(m) or self.centres(m, src)

    def check(self, sources: dict[str, "Source"], stats: dict[str, dict[str, list[dict]]]
              ) -> dict[str, Prep]:
        """The modalities that carry a signal shared by both graphs, from every block's
        :func:`block_stats` (side -> blocks in order): modality -> how its rows are prepared
        (:class:`~psqe_ray.core.blocks.Prep`).  Sets ``feature_sources_`` and ``skipped_``."""
        out: dict[str, Prep] = {}
        self.feature_sources_ = {}
        for m, src in sources.items():
            st = stats[m]
            present = {s: sum(b["present"] for b in st[s]) for s in SIDES}
            if not (present["left"] and present["right"]):
                log.info("modality %s: absent on one side, not used", m)
                continue
            shared = np.logical_or.reduce([b["any"] for b in st["left"]]) \
                & np.logical_or.reduce([b["any"] for b in st["right"]])
            if not shared.any():
                # e.g. relation bags over per-side relation ids (no relation names): every
                # cross-graph similarity is exactly 0, so the modality carries no signal here
                log.warning("modality %s: the two graphs share no feature dimension (unnamed "
                            "relations?); not used", m)
                self.skipped_[m] = "no shared feature dimension between the graphs"
                continue
            centre = side_means({s: [b["chunks"] for b in st[s]] for s in SIDES}) \
                if self.centres(m, src) else None
            fill = None
            if self.fills(m):
                fill = fill_stats([b["chunks"] if centre is None else
                                   centred_stats(b["chunks"], centre[s])
                                   for s in SIDES for b in st[s]])
            out[m] = Prep(fill, centre)
            self.feature_sources_[m] = src.label + (", centred per graph" if centre else "")
        if not out:
            raise ValueError(f"none of the modalities {list(self.config.modalities)} carries a "
                             f"signal shared by both graphs (skipped: {self.skipped_ or 'absent'})")
        return out

    def prepared_rows(self, m: str, x: np.ndarray, present: np.ndarray, start: int, side: str,
                      prep: Prep) -> np.ndarray:
        """A block's prepared rows: centred where :meth:`centres` says, absent rows filled
        where the paper does, L2-normalised."""
        return prep.rows(x, present, start, self.config.seed, m, side,
                         self.config.distributed.chunk_rows)

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, pair: KGPair) -> "SeedGenerator":
        cfg = self.config
        cfg.check()
        self.stages_: list[dict] = []
        self.profile_: list[dict] = []
        self.stage_sets_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.table_ = SeedTable()
        self.clusters_ = None
        empty = np.zeros(0, np.int64)
        self.seeds_ = (empty, empty.copy(), np.zeros(0, np.float32), np.zeros(0, object))
        t0 = time.perf_counter()
        with StepMeter() as meter:  # raw rows, fill, signal test: before the features stage
            mods, weights = self.prepare(pair)
        self.profile_.append({"step": "prepare", **meter.record()})

        def features() -> dict:
            fused_l, fused_r = self._fuse(mods, weights)
            self._timed("features", t0, 0, 0)
            return {"fused_left": fused_l, "fused_right": fused_r}

        out = self._stage("features", features)
        fused_l, fused_r = out["fused_left"], out["fused_right"]
        budget = self.budget_ = seed_budget(cfg.stage1.budget, pair.left.n, pair.right.n)
        if cfg.method in ("uvp", "multimodal-greedy"):
            t = time.perf_counter()
            if cfg.method == "uvp":
                pivot = self._uvp_pivot(mods)
                if pivot not in mods:
                    raise ValueError(f"UVP pivot modality {pivot!r} is not available "
                                     f"(available: {self.modalities_})")
                self.pivot_ = pivot
                xl, xr = mods[pivot]
            else:
                xl, xr = fused_l, fused_r
            l, r, s = self._greedy(xl, xr, budget)
            name = cfg.method
            self._accept(name, l, r, s, np.full(len(l), name, dtype=object), t, added=len(l))
            self._score_histogram(name, s, None)  # the whole-graph greedy's rejections: not kept
            return self
        # kept for the report's UVP baseline at PSQE's size (:meth:`uvp_baseline`)
        pivot = self._uvp_pivot(mods)
        self._baseline = (pivot, mods[pivot]) if pivot in mods else None
        return self._fit_psqe(pair, mods, weights, fused_l, fused_r)

    def _uvp_pivot(self, mods) -> str:
        """UVP's pivot modality: ``uvp_modality``, or (auto) image, else name, else the first."""
        pivot = self.config.uvp_modality
        if pivot == "auto":
            pivot = "image" if "image" in mods else "name" if "name" in mods else self.modalities_[0]
        return pivot

    def uvp_baseline(self, count: int):
        """Evaluation only: UVP's seeds (greedy one-to-one on the pivot modality, as
        ``method=uvp`` makes them) with a budget of ``count``, on this PSQE fit's prepared
        features, so that the report can set PSQE's seeds against UVP's at equal size.
        Returns (pivot, left ids, right ids, scores), or None when the fit was not PSQE or
        the pivot is not among its modalities.  Frees the features kept for it."""
        kept, self._baseline = getattr(self, "_baseline", None), None
        if kept is None:
            return None
        pivot, (xl, xr) = kept
        return (pivot, *self._greedy(xl, xr, int(count)))

    def release_baseline(self) -> None:
        """Drop the features kept for :meth:`uvp_baseline` (no baseline is wanted)."""
        self._baseline = None

    def prepare(self, pair: KGPair) -> tuple[dict, dict[str, float]]:
        """(modality -> (left, right) prepared vectors, fusion weights); sets ``modalities_``
        and ``skipped_`` (modality -> why it was left out).  In-process: one block per side."""
        self.skipped_: dict[str, str] = {}
        tables = {m: pair.left.features[m][0].shape[1] for m in pair.left.features
                  if m in pair.right.features}
        sources = self.plan(pair, tables)
        raw = {m: {s: raw_rows(src, s, 0, pair.side(s).n, self.config.features,
                               names=pair.side(s).names, table=pair.side(s).features.get(m))
                   for s in SIDES} for m, src in sources.items()}
        chunk = self.config.distributed.chunk_rows
        stats = {m: {s: [block_stats(*raw[m][s], 0, self.needs_stats(m, src), chunk)]
                     for s in SIDES} for m, src in sources.items()}
        preps = self.check(sources, stats)
        # in-process the sides stay whole, dense arrays (the Ray path keeps sparse blocks)
        mods = {m: tuple(dense(self.prepared_rows(m, *raw[m][s], 0, s, preps[m]))
                         for s in SIDES) for m in preps}
        mods = self.screen(mods, lambda x, ids: x[ids], topk_search)
        return mods, self._weights(mods)

    def screen(self, mods: dict, rows, search) -> dict:
        """``mods`` without the modalities that carry no signal shared by both graphs
        (:mod:`psqe_ray.core.signal`; no gold link read).  rows(x, ids) -> rows of a side's
        matrix; search(q, base, k) -> exact top-k of array ``q`` among ``base``'s rows (always
        exact, whatever the search layer's plan: a few thousand queries).  Sets
        ``signal_`` (modality -> the test's figures) and adds the dropped ones to ``skipped_``;
        when every modality fails, the run stops with that error rather than align noise."""
        self.signal_ = {}
        if not self.config.features.signal_test:
            return mods
        for m, (left, right) in mods.items():
            self.signal_[m] = signal_test(lambda ids, x=left: rows(x, ids),
                                          lambda q, k, y=right: search(q, y, k),
                                          len(left), len(right), self.config.seed)
        dropped = [m for m, t in self.signal_.items() if not t["signal"]]
        if len(dropped) == len(mods):
            raise ValueError(f"none of the modalities {sorted(mods)} carries a signal shared by "
                             f"both graphs (signal test: {self.signal_})")
        for m in dropped:
            t = self.signal_[m]
            log.warning("modality %s: no signal shared by the two graphs (best-match scores "
                        "against a coordinate-shuffled baseline: AUC %.3f, at most %.3f < "
                        "%.2f); not used", m, t["auc"], t["upper"], 0.5 + MIN_EFFECT)
            self.skipped_[m] = (f"no shared signal (AUC {t['auc']:.3f} against a shuffled "
                                f"baseline, at most {t['upper']:.3f})")
        return {m: v for m, v in mods.items() if m not in dropped}

    def _weights(self, mods) -> dict[str, float]:
        self.modalities_ = sorted(mods)
        weights = {m: self.config.weights.get(m, 0.0) for m in mods}
        if not any(w > 0 for w in weights.values()):
            weights = {m: 1.0 for m in mods}
        return weights

    # -- the steps the distributed path runs on Ray (same inputs, same outputs) -----------------
    def _fuse(self, mods, weights) -> tuple[np.ndarray, np.ndarray]:
        return (fuse({m: v[0] for m, v in mods.items()}, weights),
                fuse({m: v[1] for m, v in mods.items()}, weights))

    def _sample_clusters(self, sim_l, sim_r, lab_l, lab_r, budgets) -> list[tuple]:
        """Stage I greedy per cluster: a list of (left ids, right ids, scores, the rejected
        candidates' score counts) per cluster."""
        parts = []
        for c in range(len(budgets)):
            il, ir = np.flatnonzero(lab_l == c), np.flatnonzero(lab_r == c)
            parts.append(sample_cluster_counted(sim_l[il], sim_r[ir], il, ir, int(budgets[c]),
                                                self.config.stage1.candidates, self.searcher))
        return parts

    def _learn(self, pair: KGPair, mods, weights, seed_l, seed_r):
        """Stage II encoder trained on the seeds: every entity's learned vectors, fused like
        the raw ones, (left, right)."""
        cfg = self.config
        feats = model_inputs(mods)
        graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
        with torch_threads(cfg.threads):
            model, self.losses_ = train_encoder(feats, graph, seed_l, seed_r, pair.left.n,
                                                self.anchor_, cfg.stage2, cfg.seed,
                                                device=resolve_device(cfg.distributed.device))
            learned = embed_fused(model, feats, graph, weights)
        return learned[:pair.left.n], learned[pair.left.n:]

    def _cluster(self, fused_l, fused_r, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage I K-means over both graphs' fused vectors: (left labels, right labels)."""
        labels = kmeans([fused_l, fused_r], k, iters=self.config.stage1.kmeans_iters,
                        seed=self.config.seed, chunk=self.config.distributed.chunk_rows)
        return labels[:len(fused_l)], labels[len(fused_l):]

    def _rows(self, x, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` of one side's matrix (the seed table's rows: small)."""
        return x[ids]

    def _joined(self, fused, learned):
        """Stage III's vectors: raw fused and learned, side by side, L2-normalised."""
        return l2_normalize(np.concatenate([fused, learned], axis=1))

    def _greedy(self, xl, xr, budget: int):
        """The UVP baselines' greedy one-to-one over whole graphs."""
        return greedy_seeds(xl, xr, budget, searcher=self.searcher)

    def _global_topk(self, learned_l, learned_r, k: int):
        """(left -> right top-k, right -> left top-k) over the whole graphs."""
        if self.searcher.one_pass(len(learned_l), len(learned_r)):
            return self.searcher.topk_both(learned_l, learned_r, k, progress=TOPK_LABELS[2])
        return (self.searcher.topk(learned_l, learned_r, k, progress=TOPK_LABELS[0]),
                self.searcher.topk(learned_r, learned_l, k, progress=TOPK_LABELS[1]))

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

    def _stage(self, name: str, run) -> dict:
        """:meth:`_run_stage` with its wall seconds and peak memory in ``profile_``."""
        with StepMeter() as meter:
            out = self._run_stage(name, run)
        self.profile_.append({"step": name, **meter.record()})
        return out

    def _score_histogram(self, name: str, accepted: np.ndarray,
                         rejected: np.ndarray | None) -> None:
        """Put the stage's score histogram (accepted scores; rejected: full-grid counts, or
        None when not recorded) on its record, the last one."""
        if self.stages_ and self.stages_[-1]["name"] == name:
            self.stages_[-1]["scores"] = histogram_record(score_counts(accepted), rejected)

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
        keep = self._mic_keep(self._rows(fused_l, l), self._rows(fused_r, r))
        self.table_.add(l[~keep], r[~keep], s[~keep], src[~keep], name, False,
                        "mic: partner is not the most similar seed entity")
        self._accept(name, l[keep], r[keep], s[keep], src[keep], t, removed=int((~keep).sum()))
        self._score_histogram(name, s[keep], score_counts(s[~keep]))
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
            lab_l, lab_r = self._cluster(fused_l, fused_r, k)
            if cfg.stage1.similarity == "relation_attribute":
                ra = {m: mods[m] for m in ("relation", "attribute") if m in mods}
                if not ra:
                    raise ValueError("stage1.similarity=relation_attribute needs the relation "
                                     "or attribute modality")
                sim_l, sim_r = self._fuse(ra, weights)
            else:
                sim_l, sim_r = fused_l, fused_r
            sizes = np.bincount(lab_l, minlength=k) + np.bincount(lab_r, minlength=k)
            budgets = cluster_budgets(sizes, self.budget_)
            parts = self._sample_clusters(sim_l, sim_r, lab_l, lab_r, budgets)
            l, r, s = (np.concatenate([p[i] for p in parts]) for i in range(3))
            order = np.lexsort((r, l, -s))
            self._add("stage1-cluster", l[order], r[order], s[order], t)
            self._score_histogram("stage1-cluster", s, sum(p[3] for p in parts))
            return {"cluster_left": lab_l, "cluster_right": lab_r, "cluster_budgets": budgets}

        out = self._stage("stage1-cluster", stage1)
        self.clusters_ = (out["cluster_left"], out["cluster_right"])
        self.cluster_budgets_ = out["cluster_budgets"]

        # ---- Stage II: ICL fine-tuning, global sampling, MIC (4.2)
        def train() -> dict:
            t = time.perf_counter()
            l, r = self.seeds_[0], self.seeds_[1]
            learned_l, learned_r = self._learn(pair, mods, weights, l, r)
            self.train_seconds_ = round(time.perf_counter() - t, 3)
            return {"learned_left": learned_l, "learned_right": learned_r}

        out = self._stage("stage2-train", train)
        learned_l, learned_r = out["learned_left"], out["learned_right"]

        def stage2_global() -> dict:
            t = time.perf_counter()
            taken_l, taken_r = self._taken(nl, nr)
            k = cfg.stage2.candidates
            lr, rl = self._global_topk(learned_l, learned_r, k)
            gl, gr, gs = candidates_union(lr, rl, len(learned_r))
            acc = greedy_one_to_one(gl, gr, gs, limit=cfg.stage2.global_budget or self.budget_,
                                    taken_left=taken_l, taken_right=taken_r)
            rejected = np.ones(len(gs), bool)
            rejected[acc] = False
            rejected = score_counts(gs[rejected])
            gl, gr, gs = gl[acc], gr[acc], gs[acc]
            order = np.lexsort((gr, gl, -gs))
            self._add("stage2-global", gl[order], gr[order], gs[order], t)
            self._score_histogram("stage2-global", gs, rejected)
            return {}

        self._stage("stage2-global", stage2_global)
        if cfg.stage2.mic:
            self._stage("stage2-mic", lambda: self._mic("stage2-mic", fused_l, fused_r))

        # ---- Stage III: neighbourhood expansion and recheck (4.3)
        if cfg.stage3.enabled:
            def stage3() -> dict:
                t = time.perf_counter()
                vec_l, vec_r = self._joined(fused_l, learned_l), self._joined(fused_r, learned_r)
                l0, r0 = self.seeds_[0], self.seeds_[1]
                taken_l, taken_r = self._taken(nl, nr)
                st = cfg.stage3
                cand = self._expansion_candidates(l0, r0, pair, vec_l, vec_r, taken_l, taken_r)
                el, er, es, _ = expand_spread(
                    cand, l0, r0, pair.left.degree(), pair.right.degree(), taken_l, taken_r,
                    spread=st.spread, threshold_start=st.threshold_start,
                    threshold_end=st.threshold_end, candidates_start=st.candidates_start,
                    candidates_end=st.candidates_end)
                self._add("stage3-expansion", el, er, es, t)
                # every accepted pair is one candidate row, with its score: the rest rejected
                self._score_histogram("stage3-expansion", es,
                                      score_counts(cand["score"]) - score_counts(es))
                return {}

            self._stage("stage3-expansion", stage3)
            if cfg.stage3.recheck:
                self._stage("stage3-recheck",
                            lambda: self._mic("stage3-recheck", fused_l, fused_r))
        return self
