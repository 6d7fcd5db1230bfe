"""One trainer for the four recipes: seed pairs in, a joint vector per entity out.

Schedule: ``epochs`` over the seed pairs, then ``rounds`` iterative rounds, each a check and
``round_epochs`` more epochs.  The budget follows the data size by one rule: an epoch visits
every pair up to ``epoch_pairs`` (32,768 by default: all pairs of a 15K-20K-entity benchmark
such as DBP15K), and a fresh seeded sample of that many above it.  So the gradient steps stay
bounded as the graphs grow, while each check is linear in the entities.

A check embeds every entity and takes the mutual nearest
neighbours (MNN) among the entities no pair holds yet; a recipe adds them at once (EVA) or only
those that were MNN at the previous check too (MEAformer's stability filter, PCMEA's
calibration, which also asks the momentum encoder to agree).  Gold links never enter: the
trainer does not receive them.

Data parallelism is :mod:`psqe_ray.core.train`'s: every worker draws the same batch order, works
on its slice of each batch and ``sync`` averages the gradients, so all workers hold the same
parameters and make the same iterative choices.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any, Callable

import numpy as np
import torch

from psqe_ray.align.losses import ial_loss, mi_loss, momentum_icl, nca_loss
from psqe_ray.align.model import STRUCTURE, AlignModel, feature_base, structure_input
from psqe_ray.align.mutual import mutual_nearest, still_mutual
from psqe_ray.align.recipes import Recipe, get_recipe
from psqe_ray.config import AlignConfig
from psqe_ray.core.assignment import assign
from psqe_ray.core.neighbour_sampler import CSRSampler
from psqe_ray.core.seed_encoder import icl_loss
from psqe_ray.core.search import Searcher
from psqe_ray.core.smoothing import smooth
from psqe_ray.core.train import layer_fanouts, rank_batches, stage_rng
from psqe_ray.core.progress import EpochProgress

log = logging.getLogger(__name__)

# purposes of the aligner's random streams (psqe_ray.core.train.stage_rng)
ALIGN_INIT, ALIGN_ORDER, ALIGN_SAMPLE, ALIGN_BASE = 11, 12, 13, 14


AUTO_HOPS = 3  # align.smooth=-1 tries 0 .. AUTO_HOPS hops


class Aligner:
    """A recipe's aligner (scikit-learn style: settings in ``__init__``, ``fit`` returns self).

    Args:
        config: the ``align`` section (``config.recipe`` names the recipe).
        random_state: seed of every random stream (initialisation, batch order, sampling).

    After ``fit``:
        embeddings_: (left float32 (n_left, D), right float32 (n_right, D)): the
            L2-normalised joint vectors, with ``align.smooth`` hops of neighbourhood means
            appended (:func:`psqe_ray.core.smoothing.smooth`; D = (hops + 1) x the joint
            width, inner products in [-1, 1]).
        modality_weights_: modality -> mean fusion weight over all entities.
        structure_: the structure input used (``align.structure``, ``auto`` resolved).
        smoothing_: ``hops`` appended to the joint vectors and how they were chosen.
        (With ``world`` > 1 these three are rank 0's alone; other ranks hold None / {}.)
        pairs_: (left int64, right int64) the training pairs at the end (seeds + added).
        added_: pairs added per iterative round; matched_: the one-to-one matches that became
            the training pairs, per match round (``align.match_rounds``); losses_: loss per
            epoch.
    """

    def __init__(self, config: AlignConfig | None = None, random_state: int = 42,
                 searcher: Searcher | None = None, device: str = "cpu") -> None:
        self.config = config or AlignConfig()
        self.recipe: Recipe = get_recipe(self.config.recipe)
        self.random_state = random_state
        self.searcher = searcher or Searcher(seed=random_state)
        self.device = device  # where the network trains and embeds (a torch device name)

    def _rounds(self) -> int:
        return self.recipe.rounds if self.config.rounds < 0 else self.config.rounds

    def epochs(self) -> int:
        """Training epochs of the whole schedule (the first training, then every round's)."""
        return self.config.epochs + self.config.round_epochs * (self._rounds()
                                                                + self.config.match_rounds)

    def fit(self, feats: dict, graph: tuple[np.ndarray, np.ndarray], n_left: int,
            seed_left: np.ndarray, seed_right: np.ndarray, *, rank: int = 0, world: int = 1,
            sync: Callable[[torch.nn.Module], None] | None = None,
            on_epoch: Callable[[int, float], None] | None = None,
            checkpoint: Any = None,
            gather: Callable[[object], list] | None = None) -> "Aligner":
        """Train on seed pairs.

        Args:
            feats: modality -> model input over both graphs (left rows, then right rows), as
                :func:`psqe_ray.core.train.model_inputs` makes them.
            graph: the joint CSR adjacency (:func:`psqe_ray.core.train.joint_graph`).
            n_left: left entity count (right ids are shifted by it in ``feats`` and ``graph``).
            seed_left, seed_right: int64 (S,) the pseudo seeds, left and right ids.
            rank, world, sync: data parallelism (module docstring).
            on_epoch: called with (epochs done, loss) after every epoch.
            checkpoint: where to save the state every ``checkpoint.every`` epochs and after
                each iterative round's check, and to resume from when it holds a state of
                this job: an object with ``every``, ``url``, ``load(device) -> dict | None``
                and ``save(dict)`` (:class:`psqe_ray.io.checkpoint.AlignCheckpoint`, which
                stores it at any fsspec URL); rank 0 saves.
            gather: with ``world`` > 1, every rank's object as a list in rank order (the
                neighbour samplers' random states go into rank 0's checkpoint).
        """
        cfg, rec = self.config, self.recipe
        n_nodes = len(graph[0]) - 1
        n_right = n_nodes - n_left
        torch.manual_seed(int(stage_rng(self.random_state, ALIGN_INIT).integers(2 ** 31)))
        dims = {m: f.shape[1] for m, f in feats.items()}
        # initialised on the CPU (the same weights on any device), then moved
        self.structure_ = structure_input(cfg.structure, len(seed_left), n_left, n_right)
        base = feature_base(feats, cfg.dim, int(stage_rng(self.random_state, ALIGN_BASE)
                                                  .integers(2 ** 31))) \
            if self.structure_ in ("features", "init") else None
        model = AlignModel(dims, n_nodes, cfg.dim, cfg.gat_layers, rec.fusion,
                           mi=rec.mi > 0, base=base,
                           trainable=self.structure_ == "init").to(self.device)
        terms = 1 + (len(model.modalities) if rec.per_modality else 0)
        log_var = torch.nn.Parameter(torch.zeros(terms, device=self.device)) \
            if rec.uncertainty else None
        params = list(model.parameters()) + ([log_var] if log_var is not None else [])
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        target = None
        if rec.loss == "momentum":
            target = copy.deepcopy(model)
            for p in target.parameters():
                p.requires_grad_(False)
            if self.structure_ == "features":  # one fixed input for both encoders, not a copy
                target.structure = model.structure
        holder = torch.nn.Module()  # what sync sees: the model and the uncertainty weights
        holder.model = model
        if log_var is not None:
            holder.log_var = log_var
        order_rng = stage_rng(self.random_state, ALIGN_ORDER)
        sampler = CSRSampler(graph[0], graph[1], stage_rng(self.random_state, ALIGN_SAMPLE, rank))
        full = CSRSampler(graph[0], graph[1], stage_rng(self.random_state, ALIGN_SAMPLE))
        fanouts = layer_fanouts(cfg.fanout, cfg.gat_layers)
        pairs_l = np.asarray(seed_left, np.int64)
        pairs_r = np.asarray(seed_right, np.int64)
        self.losses_: list[float] = []
        self.added_: list[int] = []
        self.matched_: list[int] = []
        self.steps_ = 0  # gradient steps taken (the budget the size rule bounds)
        t0 = time.perf_counter()

        def step_loss(b: np.ndarray) -> torch.Tensor:
            targets = np.concatenate([pairs_l[b], pairs_r[b] + n_left])
            blocks = sampler.blocks(targets, fanouts)
            emb = model.encode(feats, targets, blocks)
            joint, _ = model.fuse(emb)
            k = len(b)
            if rec.loss == "nca":
                losses = [nca_loss(joint[:k], joint[k:])]
            elif rec.loss == "icl":
                losses = [icl_loss(joint[:k], joint[k:], cfg.temperature, True)]
            else:
                with torch.no_grad():
                    tj, _ = target.fuse(target.encode(feats, targets, blocks))
                losses = [momentum_icl(joint[:k], joint[k:], tj[:k], tj[k:], cfg.temperature)]
            if rec.per_modality:
                losses += [icl_loss(emb[m][:k], emb[m][k:], cfg.temperature, True)
                           for m in model.modalities]
            if log_var is not None:  # Kendall et al.: sum exp(-s) L + s
                loss = sum(torch.exp(-log_var[i]) * x + log_var[i] for i, x in enumerate(losses))
            else:
                loss = sum(losses)
            if rec.ial:
                loss = loss + sum(ial_loss(joint[:k], joint[k:], emb[m][:k], emb[m][k:])
                                  for m in model.modalities)
            if rec.mi > 0:  # per graph: in-batch negatives from the entity's own graph
                loss = loss + rec.mi * sum(mi_loss(emb[m][s], model.mi_heads[m](joint[s]),
                                                   cfg.temperature)
                                           for m in model.modalities
                                           for s in (slice(0, k), slice(k, None)))
            return loss

        # the schedule: phase 0 trains ``epochs``; phase i >= 1 is round i's check, then
        # ``round_epochs``; ``at`` says where it stands (what a checkpoint resumes from)
        phases = [cfg.epochs] + [cfg.round_epochs] * (self._rounds() + cfg.match_rounds)
        progress = EpochProgress(f"align {rec.name} training")
        at = {"phase": 0, "epoch": 0, "checked": False}
        previous: set[tuple[int, int]] | None = None
        state = checkpoint.load(self.device) if checkpoint is not None else None
        if state is not None:
            model.load_state_dict(state["model"])
            if target is not None:
                target.load_state_dict(state["target"])
            if log_var is not None:
                with torch.no_grad():
                    log_var.copy_(state["log_var"])
            opt.load_state_dict(state["opt"])
            torch.set_rng_state(state["torch_rng"])
            order_rng.bit_generator.state = state["order_rng"]
            sampler.rng.bit_generator.state = state["sampler_rng"][rank]
            full.rng.bit_generator.state = state["full_rng"]
            pairs_l, pairs_r = state["pairs"]
            previous = None if state["previous"] is None else set(map(tuple, state["previous"]))
            self.losses_, self.added_, self.steps_ = state["losses"], state["added"], state["steps"]
            self.matched_ = list(state.get("matched", []))
            at = state["at"]
            log.info("align %s: resumed from %s (epoch %d, round %d)", rec.name, checkpoint.url,
                     len(self.losses_), at["phase"])

        def save() -> None:
            if checkpoint is None:
                return
            rngs = sampler.rng.bit_generator.state
            rngs = gather(rngs) if gather is not None and world > 1 else [rngs]
            if rank != 0:
                return
            checkpoint.save({
                "model": model.state_dict(),
                "target": None if target is None else target.state_dict(),
                "log_var": None if log_var is None else log_var.detach().cpu(),
                "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "order_rng": order_rng.bit_generator.state, "sampler_rng": rngs,
                "full_rng": full.rng.bit_generator.state, "pairs": (pairs_l, pairs_r),
                "previous": None if previous is None else sorted(previous),
                "losses": list(self.losses_), "added": list(self.added_),
                "matched": list(self.matched_),
                "steps": self.steps_, "at": dict(at)})

        def train(epochs: int) -> None:
            model.train()
            n = len(pairs_l)
            while at["epoch"] < epochs:
                perm = order_rng.permutation(n)
                if 0 < cfg.epoch_pairs < n:  # the size rule: a fresh sample each epoch
                    perm = perm[:cfg.epoch_pairs]
                total = 0.0
                for b in rank_batches(perm, cfg.batch_size, world, rank):
                    loss = step_loss(b)
                    self.steps_ += 1
                    opt.zero_grad()
                    loss.backward()
                    if sync is not None:
                        sync(holder)
                    opt.step()
                    if target is not None:
                        with torch.no_grad():
                            for pt, p in zip(target.parameters(), model.parameters()):
                                pt.mul_(cfg.momentum).add_(p.detach(), alpha=1 - cfg.momentum)
                    total += float(loss.detach())
                self.losses_.append(total)
                at["epoch"] += 1
                done = len(self.losses_)
                progress.update(done, self.epochs(), total)
                if on_epoch is not None:
                    on_epoch(done, total)
                if checkpoint is not None and done % checkpoint.every == 0:
                    save()
            model.eval()

        while at["phase"] < len(phases):
            if at["phase"] > self._rounds() and not at["checked"]:
                # a match round: the one-to-one alignment of the vectors so far is the new
                # pair set (it keeps or drops the seeds like any other pair)
                pairs_l, pairs_r = self._match_check(model, feats, full, graph, n_left)
                self.matched_.append(len(pairs_l))
                log.info("align %s round %d: %d one-to-one matches are the training pairs",
                         rec.name, at["phase"], len(pairs_l))
                at["checked"] = True
                save()
            elif at["phase"] > 0 and not at["checked"]:
                cand = self._check(model, target, feats, full, n_left, n_right, pairs_l, pairs_r)
                keys = set(zip(cand[0].tolist(), cand[1].tolist()))
                accept = keys if rec.agree <= 1 else (
                    keys & previous if previous is not None else set())
                previous = keys
                new = sorted(accept)
                self.added_.append(len(new))
                log.info("align %s round %d: %d mutual nearest pairs, %d added", rec.name,
                         at["phase"], len(keys), len(new))
                if new:
                    arr = np.asarray(new, np.int64)
                    pairs_l = np.concatenate([pairs_l, arr[:, 0]])
                    pairs_r = np.concatenate([pairs_r, arr[:, 1]])
                at["checked"] = True
                save()
            if len(pairs_l) >= 2 * world:
                train(phases[at["phase"]])
            at = {"phase": at["phase"] + 1, "epoch": 0, "checked": False}
        self.embeddings_, self.modality_weights_, self.smoothing_ = None, {}, None
        if rank == 0:  # only rank 0's vectors are used: the other ranks skip the embedding
            joint, weights = model.joint_all(feats, full)  # and the smoothing's searches
            joint, self.smoothing_ = self._smooth(joint, graph, n_left)
            self.embeddings_ = (joint[:n_left], joint[n_left:])
            self.modality_weights_ = {m: float(w) for m, w in zip(model.modalities, weights)}
        self.pairs_ = (pairs_l, pairs_r)
        self.train_seconds_ = time.perf_counter() - t0
        self.model_ = model
        return self

    def _smooth(self, joint: np.ndarray, graph, n_left: int) -> tuple[np.ndarray, dict]:
        """The final vectors: ``joint`` with ``align.smooth`` hops of neighbourhood means
        appended (training-free, :func:`psqe_ray.core.smoothing.smooth`), and how the count
        was chosen.  ``-1``: each count from 0 up to :data:`AUTO_HOPS` is tried while it adds
        mutual nearest pairs (every entity free; a tie keeps fewer hops), the unsupervised
        criterion of cross-lingual embedding model selection: no seed or gold link is read."""
        hops = self.config.smooth
        if hops >= 0:
            return (smooth(joint, graph, hops) if hops else joint), {"hops": hops,
                                                                     "chosen_by": "setting"}

        def mutual(x: np.ndarray) -> int:
            free_l, free_r = np.ones(n_left, bool), np.ones(len(x) - n_left, bool)
            return int(len(mutual_nearest(x[:n_left], x[n_left:], free_l, free_r,
                                          self.searcher)[0]))

        counts, best, out = {0: mutual(joint)}, 0, joint
        for h in range(1, AUTO_HOPS + 1):
            x = smooth(joint, graph, h)
            counts[h] = mutual(x)
            if counts[h] <= counts[best]:
                break
            best, out = h, x
        log.info("align %s: %d smoothing hop(s), chosen by mutual nearest pairs %s",
                 self.recipe.name, best, counts)
        return out, {"hops": best, "chosen_by": "mutual nearest pairs",
                     "mutual_nearest": {str(h): c for h, c in counts.items()}}

    def _match_check(self, model, feats, full, graph, n_left) -> tuple[np.ndarray, np.ndarray]:
        """The one-to-one matches of the current model's final vectors (smoothed, Sinkhorn on
        the candidate graph: what ``matches.parquet`` would hold now), left and right ids."""
        cfg = self.config
        joint, _ = model.joint_all(feats, full)
        x, _ = self._smooth(joint, graph, n_left)
        left, right = x[:n_left], x[n_left:]
        _, m = assign(*self.searcher.topk_both(left, right, cfg.match_k), cfg)
        order = np.argsort(m.left, kind="stable")
        return m.left[order].astype(np.int64), m.right[order].astype(np.int64)

    def _check(self, model, target, feats, full, n_left, n_right, pairs_l, pairs_r):
        free_l = np.ones(n_left, bool)
        free_r = np.ones(n_right, bool)
        free_l[pairs_l] = False
        free_r[pairs_r] = False
        joint, _ = model.joint_all(feats, full)
        l, r = mutual_nearest(joint[:n_left], joint[n_left:], free_l, free_r, self.searcher)
        if target is not None:  # calibration: the momentum encoder must pick the same pairs
            tj, _ = target.joint_all(feats, full)
            both = still_mutual(tj[:n_left], tj[n_left:], free_l, free_r, l, r, self.searcher)
            l, r = l[both], r[both]
        return l, r


__all__ = ["Aligner", "STRUCTURE", "mutual_nearest", "still_mutual", "structure_input"]
