"""The exact search layer's own costs at the size of a DBP15K pair: prints one JSON line per figure.

    python benchmarks/search_costs.py [--rows 19000] [--dim 512] [--repeat 2]

Synthetic unit vectors (the right side a noisy permutation of the left, cosine about .7 to the
partner: one clear best match per row), the size of zh_en's two graphs and the width of its
smoothed aligner vectors.  Figures (best of ``--repeat`` runs):

* ``merge``: three shard results of a left -> right top-50 merged with ``merge_topk``;
* ``two_searches``: ``topk_search`` left -> right and right -> left, k = 1, 3, 50;
* ``both_ways``: ``topk_search_both``, the same answers from one pass (absent before it existed);
* ``exact_eval``: ``alignment_metrics`` with the exact ranks and CSLS (k = 3) on a 15,000-link gold.

It runs against whichever psqe_ray is importable, so the same script times an older checkout
(``PYTHONPATH=/path/to/old/checkout``).  Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from psqe_ray.core import topk as T
from psqe_ray.core.alignment_quality import alignment_metrics


def vectors(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((rows, dim)).astype(np.float32)
    left /= np.linalg.norm(left, axis=1, keepdims=True)
    perm = rng.permutation(rows)
    right = left[perm] + rng.standard_normal((rows, dim)).astype(np.float32) / np.sqrt(dim)
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    return left, right, perm


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(min(times), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=19000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    left, right, perm = vectors(args.rows, args.dim)
    base = {"rows": args.rows, "dim": args.dim}
    cuts = np.linspace(0, args.rows, 4).astype(int)
    shards = [T.topk_search(left, right[a:b], 50, base_offset=int(a))
              for a, b in zip(cuts[:-1], cuts[1:])]

    def merge():
        out = T.empty_topk(args.rows, 50)
        for s in shards:
            out = T.merge_topk(out, s, 50)

    print(json.dumps({**base, "figure": "merge", "k": 50, "shards": 3,
                      "seconds": best_of(args.repeat, merge)}), flush=True)
    both = getattr(T, "topk_search_both", None)
    for k in (1, 3, 50):
        print(json.dumps({**base, "figure": "two_searches", "k": k, "seconds": best_of(
            args.repeat, lambda: (T.topk_search(left, right, k), T.topk_search(right, left, k)))}),
            flush=True)
        if both is not None:
            print(json.dumps({**base, "figure": "both_ways", "k": k, "seconds": best_of(
                args.repeat, lambda: both(left, right, k))}), flush=True)
    # gold: left row i <-> its right copy; 15,000 links as in DBP15K
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    gl = np.arange(min(15000, args.rows), dtype=np.int64)
    gr = inv[gl].astype(np.int64)
    holder = {}

    def evaluate():
        holder["m"] = alignment_metrics(left, right, gl, gr, csls_k=3)

    seconds = best_of(args.repeat, evaluate)
    print(json.dumps({**base, "figure": "exact_eval", "csls_k": 3, "gold": len(gl),
                      "seconds": seconds, "hits@1": holder["m"]["hits@1"]}), flush=True)


if __name__ == "__main__":
    main()
