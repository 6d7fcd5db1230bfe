"""The aligner on a large synthetic pair, in-process: recipes x structure inputs on one seed set.

    python benchmarks/align_synth.py --entities 25000 [--recipe pcmea ...]
                                     [--structure features --structure free] [--set KEY=VALUE]

Synthesises the pair (``psqe-ray synth --entities N --seed 0``, cached) and its PSQE seeds
(``psqe-ray seeds`` defaults, cached), then for each (recipe, structure) trains
:class:`psqe_ray.align.trainer.Aligner` in this process and prints one JSON line: Hits@1 /
Hits@10 (left to right, every right entity a candidate, exact ranks), the pairs each iterative
round added and their precision among the left entities that have a gold link, the mean fusion
weights, and the training seconds.  Gold links are read after training, for these figures only.
Also prints, once, the nearest-neighbour Hits@1 of each raw modality and of the fused features
(the inputs' own ceiling without any training).
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
    p.add_argument("--entities", type=int, default=25000)
    p.add_argument("--recipe", action="append")
    p.add_argument("--structure", action="append", choices=["features", "free", "init"])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()

    from psqe_ray.align.trainer import Aligner
    from psqe_ray.config import load_config
    from psqe_ray.core.alignment_quality import gold_ranks
    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.train import joint_graph, model_inputs
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair
    from psqe_ray.runners.align import read_seeds

    cache = Path(args.cache)
    ds_url = cache / f"synth-{args.entities}"
    seeds_url = cache / "runs" / f"seeds-synth-{args.entities}"
    cli = [sys.executable, "-m", "psqe_ray.cli", "-q"]
    if not (ds_url / "_MANIFEST.json").exists():
        run_measured(cli + ["synth", str(ds_url), "--entities", str(args.entities), "--seed", "0"])
    if not (seeds_url / "_MANIFEST.json").exists():
        run_measured(cli + ["seeds", str(ds_url), str(seeds_url)])
    ds = Dataset(str(ds_url))
    pair = load_pair(ds)
    seed_l, seed_r = read_seeds(str(seeds_url), ds.entity_counts())
    gl, gr = pair.gold
    gold = dict(zip(gl.tolist(), gr.tolist()))

    def hits(left, right, searcher) -> tuple[float, float]:
        r = gold_ranks(left, right, gl, gr, searcher=searcher)
        return round(float(np.mean(r <= 1)), 4), round(float(np.mean(r <= 10)), 4)

    base = load_config(None, args.set)
    gen = SeedGenerator(base)
    mods, weights = gen.prepare(pair)
    ceiling = {m: hits(a, b, gen.searcher)[0] for m, (a, b) in mods.items()}
    ceiling["fused"] = hits(*gen._fuse(mods, weights), gen.searcher)[0]
    print(json.dumps({"entities": args.entities, "seeds": len(seed_l),
                      "nearest_neighbour_hits@1": ceiling}), flush=True)
    feats = model_inputs(mods)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    for recipe in args.recipe or ["pcmea", "meaformer"]:
        for structure in args.structure or ["features", "free"]:
            cfg = load_config(None, [*args.set, f"align.recipe={recipe}",
                                     f"align.structure={structure}"])
            t = time.perf_counter()
            a = Aligner(cfg.align, cfg.seed, gen.searcher).fit(feats, graph, pair.left.n,
                                                               seed_l, seed_r)
            seconds = time.perf_counter() - t
            pl, pr = a.pairs_
            start, rounds = len(seed_l), []
            for k in a.added_:
                judged = [(l, r) for l, r in zip(pl[start:start + k].tolist(),
                                                 pr[start:start + k].tolist()) if l in gold]
                rounds.append({"added": k, "precision": round(float(np.mean(
                    [gold[l] == r for l, r in judged])), 3) if judged else None})
                start += k
            h1, h10 = hits(*a.embeddings_, gen.searcher)
            print(json.dumps({"recipe": recipe, "structure": structure, "hits@1": h1,
                              "hits@10": h10, "rounds": rounds,
                              "weights": {m: round(w, 3) for m, w in a.modality_weights_.items()},
                              "train_seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
