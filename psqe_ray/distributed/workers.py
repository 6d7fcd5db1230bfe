"""The Ray Train worker loops: Stage II's seed encoder (:func:`seed_encoder_worker`) and the
downstream aligner (:func:`aligner_worker`), each with all-reduced gradients; rank 0 reports the
result in the final checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile

from psqe_ray.core.step_meter import high_water_bytes
from psqe_ray.distributed.raytrain import allreduce_gradients, gather_objects, send_progress
from psqe_ray.distributed.usage import Meter, gather_usage
from psqe_ray.io.fs import read_bytes, resolve

log = logging.getLogger(__name__)


def _start(config: dict, kind: str) -> tuple:
    """The first steps of every worker loop: (rank, world size, its usage :class:`Meter`, the
    graph and the seeds from the object store, the feature blocks it fetched)."""
    import ray.train
    import torch

    from psqe_ray.distributed.blocks import fetch_features

    ctx = ray.train.get_context()
    torch.set_num_threads(config["threads"])
    meter = Meter(kind, actor=True)
    graph, seeds = ray.get(config["refs"])
    meter.add(graph, seeds)
    return (ctx.get_world_rank(), ctx.get_world_size(), meter, graph, seeds,
            fetch_features(config["mods"], meter))


def seed_encoder_worker(config: dict) -> None:
    """Ray Train loop: :func:`psqe_ray.core.train.train_encoder` with all-reduced gradients."""
    import ray.train

    from psqe_ray.config import Stage2Config
    from psqe_ray.core.train import cpu_state, embed_fused_chunks, train_encoder
    from psqe_ray.distributed.blocks import BlockSink

    rank, world, meter, graph, seeds, feats = _start(config, "stage2-train")
    cfg = Stage2Config(**{**config["stage2"], "fanout": tuple(config["stage2"]["fanout"])})
    state = None
    restart = ray.train.get_checkpoint()  # this fit's latest, after a lost worker's restart
    if restart is not None:
        with restart.as_directory() as tmp:
            with open(os.path.join(tmp, "state.pkl"), "rb") as fh:
                state = pickle.load(fh)
        log.info("stage2: a training worker was lost; continuing from epoch %d", state["epoch"])
    elif config["resume"]:
        fs, path = resolve(config["resume"], config["storage_options"])
        state = pickle.loads(read_bytes(fs, path, config["resume"]))
    every = config["checkpoint_every"]

    def sync(model) -> None:
        allreduce_gradients(model, world)

    def report(done: int, losses: list[float], snapshot) -> None:
        metrics = {"epoch": done, "loss": losses[-1] if losses else 0.0}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                with open(os.path.join(tmp, "state.pkl"), "wb") as fh:
                    pickle.dump({**snapshot(), "rss": high_water_bytes()}, fh)
                with open(os.path.join(tmp, "epoch.json"), "w") as fh:
                    json.dump({"epoch": done}, fh)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    last = {}

    def on_epoch(done: int, losses: list[float], snapshot) -> None:
        last["snapshot"] = snapshot
        if rank == 0:
            send_progress(config, done, cfg.epochs, losses[-1] if losses else 0.0)
        if done % every == 0 and done < cfg.epochs:
            report(done, losses, snapshot)

    model, losses = train_encoder(feats, graph, seeds[0], seeds[1], config["n_left"],
                                  config["anchor"], cfg, config["seed"], rank=rank, world=world,
                                  sync=sync, state=state, on_epoch=on_epoch,
                                  device=config.get("device", "cpu"))
    # rank 0 embeds every entity (full neighbourhoods), fuses and writes the learned vectors
    # block by block under the stage folder; the last checkpoint says where they are
    snap = last.get("snapshot") or (lambda: {"model": cpu_state(model.state_dict()),
                                             "losses": losses, "epoch": len(losses)})
    usage = gather_usage(meter.take())  # every worker's record, for rank 0's checkpoint
    learned = None
    if rank == 0:  # chunk by chunk into the blocks: the learned vectors are never whole here
        sink = BlockSink(config["stage_url"], config["learned_prefix"], config["bounds"],
                         config["storage_options"])
        for rows in embed_fused_chunks(model, feats, graph, config["weights"]):
            sink.add(rows)
        learned = sink.entry()
    report(len(losses), losses, lambda: {**snap(), "learned": learned, "usage": usage})


ALIGNER_RESULT = ("embeddings_", "modality_weights_", "added_", "matched_", "losses_",
                  "train_seconds_", "structure_", "smoothing_", "steps_")


def aligner_worker(config: dict) -> None:
    """Ray Train loop: the aligner's ``fit`` with all-reduced gradients; rank 0 reports the
    result in a checkpoint."""
    import ray.train

    from psqe_ray.align.trainer import Aligner
    from psqe_ray.config import AlignConfig, SearchConfig
    from psqe_ray.core.search import Searcher
    from psqe_ray.distributed.blocks import write_blocks
    from psqe_ray.io.checkpoint import AlignCheckpoint

    rank, world, meter, graph, seeds, feats = _start(config, "align-train")
    cfg = AlignConfig(**{**config["align"], "fanout": tuple(config["align"]["fanout"])})
    searcher = Searcher.from_config(SearchConfig(**config["search"]), config["seed"])
    checkpoint = None
    if config["checkpoint"] is not None:
        url, tag, every = config["checkpoint"]
        checkpoint = AlignCheckpoint(url, tag, every, config["storage_options"])
    aligner = Aligner(cfg, config["seed"], searcher, config.get("device", "cpu"))
    epochs = aligner.epochs()

    def on_epoch(done: int, loss: float) -> None:
        if rank == 0:
            send_progress(config, done, epochs, loss)

    aligner.fit(feats, graph, config["n_left"], seeds[0], seeds[1], rank=rank, world=world,
                sync=lambda m: allreduce_gradients(m, world), checkpoint=checkpoint,
                gather=gather_objects, on_epoch=on_epoch)
    usage = gather_usage(meter.take())
    if rank == 0:
        # the joint vectors go block by block to storage (the checkpoint says where); the
        # driver reads them back into the object store, never into its own memory
        written = write_blocks(config["blocks_url"], "embeddings", *aligner.embeddings_,
                               config["bounds"], config["storage_options"])
        result = {k: getattr(aligner, k) for k in ALIGNER_RESULT if k != "embeddings_"}
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "result.pkl"), "wb") as fh:
                pickle.dump({**result, "embeddings_": written, "rss": high_water_bytes(),
                             "usage": usage}, fh)
            ray.train.report({"epochs": len(aligner.losses_)},
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({"epochs": len(aligner.losses_)})
