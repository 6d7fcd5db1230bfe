"""The one-to-one assignment (psqe_ray.core.assignment) at scale: candidate graph, Sinkhorn and
greedy matching on synthetic top-k lists, with time and peak memory.

    python benchmarks/matching_scale.py [--entities 400000] [--k K]   (K: align.match_k, 50)

Lists: a planted partner (left i <-> right perm[i]) scored 0.6 + noise, the other k - 1
candidates random rights scored 0.3 + noise, both directions, as the search layer would hand
them over.  Prints one JSON line: edges, seconds per step, peak RSS growth, and how many
planted pairs the matching recovers (a sanity figure, not a quality claim).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from psqe_ray.config import AlignConfig
from psqe_ray.core.assignment import candidate_graph, match


def lists(n: int, k: int, partner: np.ndarray, rng: np.random.Generator):
    ids = rng.integers(0, n, size=(n, k))
    ids[:, 0] = partner
    s = (0.3 + 0.05 * rng.standard_normal((n, k))).astype(np.float32)
    s[:, 0] = 0.6 + 0.05 * rng.standard_normal(n)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, 1), np.take_along_axis(ids, order, 1).astype(np.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=400_000)
    p.add_argument("--k", type=int, default=AlignConfig().match_k)
    args = p.parse_args()
    n, k = args.entities, args.k
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    lr, rl = lists(n, k, perm, rng), lists(n, k, np.argsort(perm), rng)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    g = candidate_graph(lr, rl, 3)
    t_graph = time.perf_counter() - t
    t = time.perf_counter()
    m = match(g)
    t_match = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"entities": n, "k": k, "edges": int(g.left.size),
                      "graph_seconds": round(t_graph, 2), "sinkhorn_match_seconds": round(t_match, 2),
                      "peak_rss_growth_mib": round((peak - base) / 1024),
                      "matches": int(m.left.size),
                      "planted_recovered": int((perm[m.left] == m.right).sum())}))


if __name__ == "__main__":
    main()
