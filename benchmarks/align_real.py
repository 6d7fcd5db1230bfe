"""Downstream aligners on the real pairs: every recipe x {UVP, PSQE seeds} x {with, without names}.

    python benchmarks/align_real.py [--pair fr_en ...] [--recipe meaformer ...]
                                    [--names with|without|both] [--set KEY=VALUE ...]

Per (pair, names): PSQE seeds (`psqe-ray seeds`; an existing PSQE output of
benchmarks/seeds_real.py in CACHE/runs is reused), then UVP seeds with the same budget as the
PSQE seed count (same number of seeds, so the comparison is about which seeds).  Then one
`psqe-ray align` child process per (recipe, seeds); one JSON line per run: Hits@1/10/MRR
(left-to-right, all gold pairs, every entity a candidate, ranked as `align.ranking`
says, plain and CSLS beside it, and the same read off alignment.parquet itself), the
field's test split, CSLS,
seconds (train + evaluation, in the child) and peak RSS, and the one-to-one alignment's
precision / recall / F1 (matches.parquet) with the Hits@k of the balanced scores.  Without
names, UVP's pivot is the first available modality (attribute bags on OpenEA); DBP15K has no
signal without names here (relations are unnamed ids) and the seed step says so.
``--features me5`` runs on the copy benchmarks/encode_real.py --model me5 encoded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402
from import_real import PAIRS  # noqa: E402
from seeds_real import ensure_import, modality_sets  # noqa: E402

RECIPES = ["eva", "mclea", "meaformer", "pcmea"]
CLI = [sys.executable, "-m", "psqe_ray.cli", "-q"]


def matching_figures(match: dict | None) -> dict:
    """The one-to-one alignment's figures (matches.parquet) for one JSON line."""
    if not match or match.get("precision") is None:
        return {}
    r = match["ranking"]
    return {"matching": match["method"], "matches": match["matches"],
            "match_precision": match["precision"], "match_recall": match["recall"],
            "match_f1": match["f1"], "balanced_hits@1": r["hits@1"],
            "balanced_hits@10": r["hits@10"], "balanced_mrr": r["mrr"]}


def table_hits(ds: str, out: Path) -> dict:
    """Hits@1 / Hits@10 of alignment.parquet itself (what a user reads), against the gold
    links: a check that the file ranks as metrics.json's headline says."""
    import numpy as np
    import pyarrow.parquet as pq

    from psqe_ray.io.dataset import Dataset

    g = Dataset(ds).table("gold", ["left_id", "right_id"])
    partner = dict(zip(g.column("left_id").to_pylist(), g.column("right_id").to_pylist()))
    t = pq.read_table(out / "alignment.parquet", columns=["left_id", "right_id", "rank"])
    left, right, rank = (t.column(c).to_numpy() for c in ("left_id", "right_id", "rank"))
    want = np.array([partner.get(x, -2) for x in left.tolist()])
    hit = right == want
    return {"table_hits@1": float(hit[rank == 1].sum()) / len(partner),
            "table_hits@10": float(hit.sum()) / len(partner)}


def seeds(ds: str, out: Path, method: str, modalities: str, sets: list[str]) -> dict:
    if not (out / "_MANIFEST.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        cmd = CLI + ["seeds", ds, str(out), "--method", method, "--modalities", modalities]
        for s in sets:
            cmd += ["--set", s]
        run_measured(cmd)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", choices=sorted(PAIRS))
    p.add_argument("--recipe", action="append", choices=RECIPES)
    p.add_argument("--seeds", action="append", choices=["uvp", "psqe"])
    p.add_argument("--names", choices=["with", "without", "both"], default="both")
    p.add_argument("--set", action="append", default=[], help="aligner settings (align.*)")
    p.add_argument("--cache", default="/tmp/psqe-bench")
    p.add_argument("--features", default="",
                   help="a model name: use the encoded copy CACHE/PAIR-MODEL made by "
                        "benchmarks/encode_real.py --model MODEL (default: the imported pair)")
    args = p.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    mods = modality_sets(args.names)
    for pair in args.pair or ["fr_en", "zh_en", "openea"]:
        ds = ensure_import(pair, cache)
        if args.features:
            ds = str(cache / f"{pair}-{args.features}")
            if not (Path(ds) / "_MANIFEST.json").exists():
                sys.exit(f"{ds}: run benchmarks/encode_real.py --pair {pair} --model "
                         f"{args.features} first")
        for modalities in mods:
            tag = "names" if "name" in modalities else "nonames"
            tag += f"-{args.features}" if args.features else ""
            runs = cache / "align-runs" / f"{pair}-{tag}"
            try:
                old = cache / "runs" / f"{pair}-psqe-{tag}"
                psqe_url = old if (old / "_MANIFEST.json").exists() else runs / "seeds-psqe"
                psqe = seeds(ds, psqe_url, "psqe", modalities, [])
                budget = psqe["seeds"]["count"]
                uvp = seeds(ds, runs / f"seeds-uvp-{budget}", "uvp", modalities,
                            [f"stage1.budget={budget}"]) if "uvp" in (args.seeds or ["uvp"]) \
                    else None
            except SystemExit as exc:  # e.g. no modality with a cross-graph signal
                print(json.dumps({"pair": pair, "names": "name" in modalities,
                                  "error": str(exc).strip().splitlines()[-1][-300:]}), flush=True)
                continue
            seed_sets = {"uvp": (runs / f"seeds-uvp-{budget}", uvp),
                         "psqe": (psqe_url, psqe)}
            for recipe in args.recipe or RECIPES:
                for kind in args.seeds or ["uvp", "psqe"]:
                    url, rep = seed_sets[kind]
                    out = runs / f"align-{recipe}-{kind}"
                    shutil.rmtree(out, ignore_errors=True)
                    cmd = CLI + ["align", ds, str(url), str(out), "--recipe", recipe,
                                 "--modalities", modalities]
                    for s in args.set:
                        cmd += ["--set", s]
                    m = run_measured(cmd)
                    met = json.loads((out / "metrics.json").read_text())
                    v = met["variants"]
                    table = table_hits(ds, out)
                    print(json.dumps({
                        "pair": pair, "names": "name" in modalities, "recipe": recipe,
                        "seeds": kind, "features": args.features or "built-in",
                        "seed_count": rep["seeds"]["count"],
                        "seed_precision": rep["seeds"]["precision"],
                        "headline": met.get("headline", "l2r/plain/all"),
                        "hits@1": met["hits@1"], "hits@10": met["hits@10"], "mrr": met["mrr"],
                        "plain_hits@1": v["l2r/plain/all"]["hits@1"],
                        "csls_hits@1": v["l2r/csls/all"]["hits@1"], **table,
                        "test_hits@1": v["l2r/plain/test"]["hits@1"],
                        "csls_test_hits@1": v["l2r/csls/test"]["hits@1"],
                        "r2l_hits@1": v["r2l/plain/all"]["hits@1"],
                        "pairs_added": met["pairs_added"],
                        **matching_figures(met.get("matching")),
                        "smoothing": met.get("smoothing"),
                        "modality_weights": met["modality_weights"],
                        "train_seconds": met["train_seconds"],
                        "seconds": m["seconds"], "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20),
                    }), flush=True)


if __name__ == "__main__":
    main()
