"""What the fixed training thread count (the `threads` setting) costs: Stage II training of a
synthetic pair under 1, 2 and 4 torch threads, and whether the results differ.

    python benchmarks/train_threads.py [--entities 10000] [--epochs 20] [--threads 1,2,4]

Prints one JSON line per thread count: seconds of training and the final loss.  Time it on an
idle machine (nothing else running).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", default="1,2,4")
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()

    from psqe_ray.config import load_config
    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.train import joint_graph, model_inputs, torch_threads, train_encoder
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair

    ds_url = Path(args.cache) / f"synth-{args.entities}"
    if not (ds_url / "_MANIFEST.json").exists():
        run_measured([sys.executable, "-m", "psqe_ray.cli", "-q", "synth", str(ds_url),
                      "--entities", str(args.entities), "--seed", "0"])
    pair = load_pair(Dataset(str(ds_url)))
    cfg = load_config(None, [f"stage2.epochs={args.epochs}"])
    gen = SeedGenerator(cfg)
    mods, _ = gen.prepare(pair)
    feats = model_inputs(mods)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    # training pairs for timing only: a fixed 10 % of the synthetic pair's true links
    gl, gr = pair.gold
    pick = np.random.default_rng(0).permutation(len(gl))[: max(1, len(gl) // 10)]
    anchor = "name" if "name" in feats else sorted(feats)[0]
    first = None
    for n in [int(x) for x in args.threads.split(",")]:
        with torch_threads(n):
            t = time.perf_counter()
            model, losses = train_encoder(feats, graph, gl[pick], gr[pick], pair.left.n, anchor,
                                          cfg.stage2, cfg.seed)
            seconds = time.perf_counter() - t
        params = np.concatenate([q.detach().numpy().ravel() for q in model.parameters()])
        first = params if first is None else first
        print(json.dumps({"threads": n, "entities": args.entities, "epochs": args.epochs,
                          "train_seconds": round(seconds, 2), "final_loss": losses[-1],
                          "max_param_diff_vs_first": float(np.abs(params - first).max())}),
              flush=True)


if __name__ == "__main__":
    main()
