"""Recall@10 of the search layer's IVF plan against exact search, on the vectors psqe-ray searches.

    python benchmarks/search_recall.py --dataset /tmp/bench/syn100k [--vectors fused,name,learned]
    python benchmarks/search_recall.py --pair fr_en --vectors learned,aligner [--force-ivf]
    python benchmarks/search_recall.py --dataset DS --stages OUT/seeds/stages --vectors learned

For each vector set it searches left -> right and right -> left with the default rule (IVF when
the base side is above ``search.exact_below``; ``--force-ivf`` applies the IVF rule below it
too, e.g. on DBP15K), draws ``--sample`` query rows (seeded), computes their exact top-10
(blocked exact search) and prints one JSON line per ``--nprobe`` value: recall@10, top-1
agreement, the plan, seconds (the search's seconds include building its IVF index).

Vector sets: ``fused`` (Stage I / Type II input), ``name`` (UVP's pivot), ``learned`` (Stage II's
learned vectors: Stage I and Stage II training run first), ``aligner`` (the default aligner's
joint embeddings trained on those PSQE seeds: the final alignment, evaluation and iterative
rounds search these).  ``--stages`` reads ``learned`` from a committed seed run's Stage II
blocks (``OUT/seeds/stages`` of ``jobs/run.py``, or a ``psqe-ray seeds`` output's ``stages``)
instead of training Stage II again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_real import PAIRS  # noqa: E402


def vector_sets(url: str, wanted: list[str], seed: int) -> dict:
    from psqe_ray.align.trainer import Aligner
    from psqe_ray.config import PSQEConfig
    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.train import joint_graph, model_inputs
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair

    pair = load_pair(Dataset(url))
    cfg = PSQEConfig(seed=seed)
    out = {}

    class Capture(SeedGenerator):
        def _run_stage(self, name, run):
            res = run()
            if name == "stage2-train":
                out["learned"] = (res["learned_left"], res["learned_right"])
                if "aligner" not in wanted:
                    raise StopIteration
            return res

    gen = Capture(cfg)
    mods, weights = gen.prepare(pair)
    if "fused" in wanted:
        out["fused"] = gen._fuse(mods, weights)
    if "name" in wanted and "name" in mods:
        out["name"] = mods["name"]
    if "learned" in wanted or "aligner" in wanted:
        try:
            gen.fit(pair)
        except StopIteration:
            pass
    if "aligner" in wanted:
        feats = model_inputs(mods)
        graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
        a = Aligner(cfg.align, seed).fit(feats, graph, pair.left.n, gen.seeds_[0], gen.seeds_[1])
        out["aligner"] = a.embeddings_
    return {k: out[k] for k in wanted if k in out}


def committed_learned(stages: str) -> tuple[np.ndarray, np.ndarray]:
    """Stage II's learned vectors as a committed run wrote them (Parquet row blocks)."""
    import pyarrow.parquet as pq

    from psqe_ray.core.blocks import dense
    from psqe_ray.distributed.blocks import _block_of

    (folder,) = sorted((Path(stages) / "stage2-train" / "blocks").glob("learned-*"))
    return tuple(np.concatenate([dense(_block_of(pq.read_table(f)))
                                 for f in sorted(folder.glob(f"{side}-*.parquet"))])
                 for side in ("left", "right"))


def measure(name: str, left: np.ndarray, right: np.ndarray, sample: int, force_ivf: bool,
            seed: int, nprobes: list[int]) -> list[dict]:
    from psqe_ray.core.search import Searcher
    from psqe_ray.core.topk import topk_search

    rows = []
    for direction, (q, b) in (("l2r", (left, right)), ("r2l", (right, left))):
        q = np.ascontiguousarray(q, np.float32)
        b = np.ascontiguousarray(b, np.float32)
        pick = np.sort(np.random.default_rng(seed).choice(len(q), min(sample, len(q)),
                                                         replace=False))
        t = time.perf_counter()
        exact = topk_search(q[pick], b, 10)[1]
        t_exact = time.perf_counter() - t
        for nprobe in nprobes:
            searcher = Searcher(index="ivf" if force_ivf else "auto", nprobe=nprobe, seed=seed)
            t = time.perf_counter()
            got = searcher.topk(q[pick], b, 10)[1]
            t_search = time.perf_counter() - t
            hit = [len(set(a.tolist()) & set(e.tolist())) / 10 for a, e in zip(got, exact)]
            rows.append({"vectors": name, "direction": direction, "rows": [len(q), len(b)],
                         "d": int(q.shape[1]), "queries": int(len(pick)),
                         "recall@10": round(float(np.mean(hit)), 4),
                         "top1_agree": round(float(np.mean(got[:, 0] == exact[:, 0])), 4),
                         "plan": searcher.plan(len(b)).describe(),
                         "seconds_exact": round(t_exact, 2),
                         "seconds_search": round(t_search, 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a psqe-ray dataset URL")
    src.add_argument("--pair", choices=sorted(PAIRS), help="a real pair (imported into --cache)")
    p.add_argument("--vectors", default="fused,name,learned")
    p.add_argument("--sample", type=int, default=10000)
    p.add_argument("--force-ivf", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--nprobe", default="0", help="comma-separated; 0 = the default rule")
    p.add_argument("--cache", default="/tmp/psqe-bench")
    p.add_argument("--stages", help="read 'learned' from this committed run's stages folder")
    args = p.parse_args()
    url = args.dataset
    if args.pair:
        from seeds_real import ensure_import

        Path(args.cache).mkdir(parents=True, exist_ok=True)
        url = ensure_import(args.pair, Path(args.cache))
    wanted = args.vectors.split(",")
    store = Path(args.cache) / "vectors" / f"{Path(url).name}-{args.seed}"
    sets = {v: (np.load(store / f"{v}-left.npy"), np.load(store / f"{v}-right.npy"))
            for v in wanted if (store / f"{v}-right.npy").exists()}
    if args.stages and "learned" in wanted:  # not cached: the run's own vectors
        sets["learned"] = committed_learned(args.stages)
    missing = [v for v in wanted if v not in sets]
    if missing:  # computed once, kept for later sweeps (--nprobe) in the cache folder
        store.mkdir(parents=True, exist_ok=True)
        for v, (left, right) in vector_sets(url, missing, args.seed).items():
            np.save(store / f"{v}-left.npy", left)
            np.save(store / f"{v}-right.npy", right)
            sets[v] = (left, right)
    for name, (left, right) in sets.items():
        for row in measure(name, left, right, args.sample, args.force_ivf, args.seed,
                           [int(x) for x in args.nprobe.split(",")]):
            print(json.dumps({"dataset": args.pair or url, **row}), flush=True)


if __name__ == "__main__":
    main()
