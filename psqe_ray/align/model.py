"""The aligners' shared network: modality encoders, a GAT over a learned structure embedding,
and a fusion into one joint vector per entity (EVA / MCLEA / MEAformer / PCMEA skeleton,
``shared/PSQE.md`` "Downstream aligners").

Branches, each to ``dim``:
    structure: an input per entity (both graphs, one id space) -> ``layers`` x GATConv over the
        joint graph.  The input is ``features``: a fixed random projection of the entity's own
        feature inputs (:func:`feature_base`), so the branch learns how to aggregate a
        neighbourhood's features and has no per-entity parameter; ``free``: a learned embedding
        per entity (EVA's), which only the seeded entities and their neighbours ever train; or
        ``init``: free, started at the projection (``align.structure``, chosen by
        :func:`structure_input`);
    every feature modality (name, relation, attribute, image): one linear layer.
Fusion: the L2-normalised branch vectors, each scaled by a modality weight, concatenated::

    joint(e) = concat_m  w_m(e) * z_m(e) / ||z_m(e)||        (M * dim,)

with ``w`` a softmax over the modalities of either global learned logits (EVA, MCLEA, PCMEA) or
per-entity scores from a one-layer transformer over the entity's M modality tokens (MEAformer).
Training runs the GAT on sampled neighbourhoods (:class:`psqe_ray.core.neighbour_sampler.CSRSampler`), and
inference on full neighbourhoods (:func:`psqe_ray.core.seed_encoder.propagate_full`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psqe_ray.core.kernels import gat_conv
from psqe_ray.core.neighbour_sampler import Block, CSRSampler
from psqe_ray.core.seed_encoder import gat_blocks, project, propagate_full

STRUCTURE = "structure"


def feature_base(feats: dict, dim: int, seed: int) -> torch.Tensor:
    """The ``features`` structure input: float32 (N, dim), row ``e`` =

        sum_m  x_m(e) / ||x_m(e)||  @  R_m  / sqrt(M)      R_m ~ N(0, 1 / dim), (d_m, dim)

    over the M feature modalities (``feats`` as :func:`psqe_ray.core.train.model_inputs` makes
    them: dense tensors or scipy CSR).  A Johnson-Lindenstrauss projection: inner products of
    the concatenated, per-modality normalised features survive up to O(1 / sqrt(dim)), every
    entity gets an input whether or not a seed touches it, and the cost is one sparse (or
    dense) product per modality, in row chunks.  Deterministic given ``seed``."""
    import scipy.sparse as sp

    gen = np.random.default_rng(seed)
    mods = sorted(feats)
    n = next(iter(feats.values())).shape[0]
    out = np.zeros((n, dim), np.float32)
    for m in mods:
        f = feats[m]
        r = (gen.standard_normal((f.shape[1], dim)) / np.sqrt(dim)).astype(np.float32)
        for a in range(0, n, 65536):
            x = f[a:a + 65536]
            if sp.issparse(x):
                norm = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
                y = np.asarray(x @ r, np.float32)
            else:
                x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
                norm = np.linalg.norm(x, axis=1)
                y = x @ r
            out[a:a + len(y)] += y / np.maximum(norm, 1e-12)[:, None]
    return torch.from_numpy(out / np.float32(np.sqrt(max(len(mods), 1))))


class AlignModel(nn.Module):
    """Args:
        dims: input width per feature modality (the structure branch is always added).
        n_nodes: entities of both graphs (left ids, then right ids shifted by the left count).
        dim: width of every branch.
        layers: GAT layers over the structure embedding.
        fusion: ``global`` (learned weight per modality) or ``entity`` (transformer weights).
        mi: add the projection heads of PCMEA's mutual-information term (joint -> dim).
        base: the structure branch's input, float32 (n_nodes, dim) (``feature_base``), fixed
            or, with ``trainable``, the start of a learned embedding; None = a learned
            embedding per entity from a random start.
    """

    def __init__(self, dims: dict[str, int], n_nodes: int, dim: int = 300, layers: int = 2,
                 fusion: str = "global", mi: bool = False,
                 base: torch.Tensor | None = None, trainable: bool = False) -> None:
        super().__init__()
        if fusion not in ("global", "entity"):
            raise ValueError(f"fusion must be global or entity, got {fusion!r}")
        self.modalities = [STRUCTURE, *sorted(dims)]
        self.fusion = fusion
        if base is not None and tuple(base.shape) != (n_nodes, dim):
            raise ValueError(f"structure base must be ({n_nodes}, {dim}), got {tuple(base.shape)}")
        if base is None:
            self.structure = nn.Parameter(torch.randn(n_nodes, dim) / dim ** 0.5)
        elif trainable:
            self.structure = nn.Parameter(base.clone())
        else:  # derived from the features on every worker: not part of the state dict
            self.register_buffer("structure", base, persistent=False)
        self.convs = nn.ModuleList(gat_conv(dim, dim) for _ in range(layers))
        self.inp = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in sorted(dims.items())})
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))
        if fusion == "entity":
            self.fuser = nn.TransformerEncoderLayer(dim, nhead=1, dim_feedforward=dim,
                                                    dropout=0.0, batch_first=True)
            self.score = nn.Linear(dim, 1)
        self.mi_heads = nn.ModuleDict({m: nn.Linear(len(self.modalities) * dim, dim)
                                       for m in self.modalities}) if mi else None

    def encode(self, feats: dict, targets: np.ndarray, blocks: list[Block]) -> dict[str, torch.Tensor]:
        """Branch vectors of ``targets`` (global node ids): modality -> float32 (T, dim)."""
        src = torch.from_numpy(blocks[0].src_nodes).to(self.structure.device)
        x = torch.index_select(self.structure, 0, src)
        out = {STRUCTURE: gat_blocks(self.convs, x, blocks)}
        for m in self.inp:
            out[m] = project(self.inp[m], feats[m], targets)
        return out

    def fuse(self, emb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(joint float32 (T, M * dim), modality weights float32 (T, M), rows sum to 1)."""
        zs = [F.normalize(emb[m], dim=1) for m in self.modalities]
        if self.fusion == "global":
            w = torch.softmax(self.logits, 0).expand(zs[0].shape[0], -1)
        else:
            h = self.fuser(torch.stack(zs, dim=1))
            w = torch.softmax(self.score(h).squeeze(-1), dim=1)
        return torch.cat([w[:, i:i + 1] * z for i, z in enumerate(zs)], dim=1), w

    @torch.no_grad()
    def joint_all(self, feats: dict, sampler: CSRSampler, chunk: int = 8192
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(joint vectors of every node, L2-normalised, float32 (N, M * dim); mean modality
        weights float32 (M,))."""
        # the structure branch whole (the graph needs it); the feature branches projected,
        # fused and written chunk by chunk: never every branch of every node at once
        n = self.structure.shape[0]
        structure = propagate_full(self.convs, self.structure.detach(), sampler, chunk)
        out = None
        wsum = torch.zeros(len(self.modalities), device=self.logits.device)
        for a in range(0, n, chunk):
            rows = np.arange(a, min(n, a + chunk))
            emb = {STRUCTURE: structure[a:a + chunk],
                   **{m: project(self.inp[m], feats[m], rows) for m in self.inp}}
            j, w = self.fuse(emb)
            if out is None:
                out = np.empty((n, j.shape[1]), np.float32)
            out[a:a + len(rows)] = F.normalize(j, dim=1).cpu().numpy()
            wsum += w.sum(0)
        if out is None:
            out = np.zeros((0, 0), np.float32)
        return out, (wsum / max(n, 1)).cpu().numpy()


# align.structure=auto: the free per-entity embedding when the seeds pair at least this share of
# the smaller graph's entities, the fixed feature projection below it (README "The aligner")
FREE_STRUCTURE_SHARE = 0.2


def structure_input(setting: str, seeds: int, n_left: int, n_right: int) -> str:
    """The structure branch's input for ``align.structure`` = ``setting``: ``auto`` resolves
    by the seed share (:data:`FREE_STRUCTURE_SHARE`).  A free embedding is trained only where
    seeds (and the pairs the rounds add) reach; with few seeds it memorises the seeded pairs,
    the fusion learns to trust it, and every other entity keeps its random start (measured:
    Hits@1 .83 free against .91 features at 8 % seeds; .96 against .94 at 35 %)."""
    if setting != "auto":
        return setting
    return "free" if seeds >= FREE_STRUCTURE_SHARE * max(1, min(n_left, n_right)) else "features"
