"""Stage II training loop (PSQE 4.2.1), shared by the in-process path and the Ray Train workers.

Randomness is keyed by (seed, purpose[, rank]) with :func:`stage_rng`, never carried from one
stage to the next: a stage gives the same result whether the stages before it ran in this
process, in other processes, or were loaded from a committed stage output (resume).

Data parallelism: with ``world`` workers every worker draws the same seed order; each batch of
``batch_size`` seed pairs is cut into ``world`` contiguous slices, worker ``rank`` computes the
contrastive loss on its slice (in-batch negatives from its slice) and the gradients are averaged
by ``sync`` (an all-reduce) before every step.  ``world = 1`` is exactly the in-process loop.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch

from psqe_ray.config import Stage2Config
from psqe_ray.core.blocks import stage_rng  # noqa: F401  (re-exported: the keyed streams)
from psqe_ray.core.neighbour_sampler import CSRSampler
from psqe_ray.core.seed_encoder import SeedEncoder, icl_loss
from psqe_ray.core.progress import EpochProgress

log = logging.getLogger(__name__)

# purposes of the keyed random streams
FEATURES, ORDER, SAMPLE = 1, 2, 3


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (0: leave torch's own count), then restore it.
    The thread count is part of a training run's result: some CPU kernels split their sums
    by thread, so the same count gives the same bits on any machine."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str = "auto") -> str:
    """``distributed.device`` -> a torch device name: ``auto`` = ``cuda`` when this process
    sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error (asked for, not available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device here")
    return device


def cpu_state(obj: Any) -> Any:
    """A state dict / optimiser state with every tensor copied to the CPU (checkpoints load
    anywhere; optimisers move their state back to the parameters' device on load)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: cpu_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_state(v) for v in obj)
    return obj


def pick_anchor(anchor: str, modalities) -> str:
    """The modality under the GAT: ``auto`` = image, else name, relation, attribute."""
    mods = sorted(modalities)
    if anchor == "auto":
        anchor = next(m for m in ("image", "name", "relation", "attribute", *mods) if m in mods)
    if anchor not in mods:
        raise ValueError(f"stage2.anchor {anchor!r} is not an available modality ({mods})")
    return anchor


def joint_graph(adj_left: tuple[np.ndarray, np.ndarray], adj_right: tuple[np.ndarray, np.ndarray],
                n_left: int) -> tuple[np.ndarray, np.ndarray]:
    """Both graphs' CSR adjacency in one id space (left ids, then right ids shifted by n_left)."""
    (ipl, inl), (ipr, inr) = adj_left, adj_right
    return np.concatenate([ipl, ipr[1:] + ipl[-1]]), np.concatenate([inl, inr + n_left])


def model_inputs(mods: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """modality -> model input over both graphs (left rows, then right rows)."""
    return {m: block_model_input([v[0], v[1]]) for m, v in mods.items()}


def block_model_input(blocks: list) -> Any:
    """The training input of the matrix made of these row blocks (ndarray or CSR, stacked in
    order): scipy CSR when at most :data:`~psqe_ray.core.blocks.MAX_DENSITY` of it is
    non-zero (built without a dense copy), else a float32 tensor."""
    import scipy.sparse as sp

    from psqe_ray.core.blocks import MAX_DENSITY, dense, nonzeros, stack

    size = sum(b.shape[0] * b.shape[1] for b in blocks)
    if size and sum(nonzeros(b) for b in blocks) <= MAX_DENSITY * size:
        return stack([sp.csr_matrix(b, dtype=np.float32) for b in blocks])
    return torch.from_numpy(np.ascontiguousarray(dense(stack(blocks)), dtype=np.float32))


def layer_fanouts(fanout: tuple[int, ...], layers: int) -> tuple[int | None, ...]:
    """Sampled neighbours per hop for ``layers`` GAT layers (None = all, past the list's end)."""
    return tuple(fanout[:layers]) + (None,) * max(0, layers - len(fanout))


def rank_batches(perm: np.ndarray, batch_size: int, world: int, rank: int):
    """This worker's slice of each batch of ``perm`` (batches too small to give every worker
    two pairs are skipped by all workers alike)."""
    for a in range(0, len(perm), batch_size):
        batch = perm[a:a + batch_size]
        if len(batch) >= 2 * world:
            yield np.array_split(batch, world)[rank]


def new_encoder(feats: dict, anchor: str, cfg: Stage2Config, seed: int,
                device: str = "cpu") -> SeedEncoder:
    """The Stage II encoder, initialised from ``seed`` on the CPU (same weights on any device),
    then moved to ``device``."""
    torch.manual_seed(seed)
    return SeedEncoder({m: f.shape[1] for m, f in feats.items()}, anchor, dim=cfg.dim,
                       layers=cfg.gat_layers, heads=cfg.gat_heads).to(device)


def train_encoder(feats: dict, graph: tuple[np.ndarray, np.ndarray], seed_left: np.ndarray,
                  seed_right: np.ndarray, n_left: int, anchor: str, cfg: Stage2Config, seed: int,
                  *, rank: int = 0, world: int = 1,
                  sync: Callable[[SeedEncoder], None] | None = None,
                  state: dict | None = None,
                  on_epoch: Callable[[int, list[float], Callable[[], dict]], None] | None = None,
                  device: str = "cpu") -> tuple[SeedEncoder, list[float]]:
    """Train the Stage II encoder on seed pairs; returns (model in eval mode, loss per epoch).

    ``graph``: joint CSR (:func:`joint_graph`).  ``state``: a snapshot from ``on_epoch`` to
    continue from (model, optimiser, random streams, epoch).  ``on_epoch(epochs_done, losses,
    snapshot)`` is called after every epoch; ``snapshot()`` returns a picklable state (tensors
    on the CPU).  ``device``: where the model trains (features stay on the CPU; each batch's
    rows move to the device).
    """
    model = new_encoder(feats, anchor, cfg, seed, device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_rng = stage_rng(seed, ORDER)
    sampler = CSRSampler(graph[0], graph[1], stage_rng(seed, SAMPLE, rank))
    losses: list[float] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        order_rng.bit_generator.state = state["order_rng"]
        sampler.rng.bit_generator.state = state["sample_rng"]
        losses = list(state["losses"])
        start = int(state["epoch"])

    def snapshot() -> dict:
        return {"model": cpu_state(model.state_dict()), "opt": cpu_state(opt.state_dict()),
                "order_rng": order_rng.bit_generator.state,
                "sample_rng": sampler.rng.bit_generator.state,
                "losses": list(losses), "epoch": len(losses)}

    n_seeds = len(seed_left)
    fanouts = layer_fanouts(cfg.fanout, cfg.gat_layers)
    if n_seeds < 2 * world:
        model.eval()
        return model, losses
    progress = EpochProgress("stage2 training")
    for epoch in range(start, cfg.epochs):
        perm = order_rng.permutation(n_seeds)
        total = 0.0
        for b in rank_batches(perm, cfg.batch_size, world, rank):
            targets = np.concatenate([seed_left[b], seed_right[b] + n_left])
            emb = model.embed_targets(feats, targets, sampler.blocks(targets, fanouts))
            loss = sum(icl_loss(z[:len(b)], z[len(b):], cfg.temperature, cfg.normalize)
                       for z in emb.values())
            opt.zero_grad()
            loss.backward()
            if sync is not None:
                sync(model)
            opt.step()
            total += float(loss.detach())
        losses.append(total)
        progress.update(epoch + 1, cfg.epochs, total)
        if on_epoch is not None:
            on_epoch(epoch + 1, losses, snapshot)
    model.eval()
    return model, losses


def embed(model: SeedEncoder, feats: dict, graph: tuple[np.ndarray, np.ndarray]
          ) -> dict[str, np.ndarray]:
    """Every entity's learned vector per modality (full neighbourhoods, no sampling)."""
    return model.embed_all(feats, CSRSampler(graph[0], graph[1], stage_rng(0, SAMPLE)))


@torch.no_grad()
def embed_fused_chunks(model: SeedEncoder, feats: dict, graph: tuple[np.ndarray, np.ndarray],
                       weights: dict[str, float], chunk: int = 8192):
    """``fuse(embed(model, feats, graph), weights)``, the same numbers, as consecutive row
    chunks (both graphs, left first), without every modality's vectors at once: the anchor's
    GAT output whole (the graph needs it), the other modalities projected and fused one chunk
    at a time (fusion is row-wise).  Yields float32 (rows, width)."""
    from psqe_ray.core.fusion import fuse

    anchor = model.embed_anchor(feats, CSRSampler(graph[0], graph[1], stage_rng(0, SAMPLE)),
                                chunk)
    used = [m for m in model.modalities if weights.get(m, 0.0) > 0]
    if not used:
        raise ValueError("no modality with a positive weight to fuse")
    for a in range(0, anchor.shape[0], chunk):
        rows = np.arange(a, min(anchor.shape[0], a + chunk))
        yield fuse({m: anchor[a:a + chunk] if m == model.anchor
                    else model.project(m, feats, rows).cpu().numpy() for m in used}, weights)


def embed_fused(model: SeedEncoder, feats: dict, graph: tuple[np.ndarray, np.ndarray],
                weights: dict[str, float], chunk: int = 8192) -> np.ndarray:
    """:func:`embed_fused_chunks` as one float32 (N, width) array."""
    parts = list(embed_fused_chunks(model, feats, graph, weights, chunk))
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
