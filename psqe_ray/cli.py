"""The ``psqe-ray`` command.

Sub-commands (``psqe-ray <command> --help`` for options):

* ``import``  DBP15K / OpenEA / MMKB / DWY100K layout folder -> dataset
* ``synth``   synthetic KG pair with a planted alignment -> dataset
* ``inspect`` counts per table, side and modality, plus validation
* ``seeds``   pseudo seeds (PSQE, UVP, multimodal greedy) -> seeds.parquet + report.json
* ``align``   downstream aligner on seeds -> alignment.parquet + metrics.json
* ``run``     encode -> seeds -> aligner -> report.json + report.html

Errors in the input are printed as one line ``error: <where>: <problem>`` with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from psqe_ray import __version__
from psqe_ray.console import OneLineParser, preflight, run_command

log = logging.getLogger("psqe_ray")


def _cmd_import(args: argparse.Namespace) -> int:
    from psqe_ray.io.importers import import_pair

    manifest = import_pair(args.format, args.src, args.dataset, names_url=args.names,
                           image_features_url=args.image_features, seed=args.seed)
    rows = {k: v["rows"] for k, v in manifest["tables"].items()}
    print(json.dumps({"dataset": args.dataset, "fingerprint": manifest["fingerprint"],
                      "rows": rows}, sort_keys=True))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from psqe_ray.testing.synth import FeatureSpec, SynthConfig, synthesize

    features = tuple(FeatureSpec.parse(f) for f in args.feature) if args.feature else None
    cfg = SynthConfig(
        entities=args.entities, seed=args.seed, shared=args.shared, avg_degree=args.avg_degree,
        degree_exponent=args.degree_exponent, relations=args.relations,
        edge_dropout=args.edge_dropout, attributes=args.attributes,
        attrs_per_entity=args.attrs_per_entity, attr_dropout=args.attr_dropout,
        name_noise=args.name_noise, name_missing=args.name_missing,
        image_files=args.image_files, chunk_size=args.chunk_size,
        **({"features": features} if features is not None else {}))
    manifest = synthesize(args.dataset, cfg)
    rows = {k: v["rows"] for k, v in manifest["tables"].items()}
    print(json.dumps({"dataset": args.dataset, "fingerprint": manifest["fingerprint"],
                      "rows": rows}, sort_keys=True))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from psqe_ray.io.inspect import format_inspection, inspect_dataset

    info = inspect_dataset(args.dataset)
    print(json.dumps(info, sort_keys=True) if args.json else format_inspection(info))
    return 0 if info["validation"]["ok"] else 1


def _read_config_text(url: str | None) -> str | None:
    if not url:
        return None
    from psqe_ray.io.fs import read_bytes, resolve

    fs, path = resolve(url)
    return read_bytes(fs, path, url).decode("utf-8")


def _encode_sets(args: argparse.Namespace) -> list[str]:
    """``psqe-ray encode`` options as ``encode.*`` settings (after --config and --set)."""
    image = args.modality == "image"
    pairs = {("image_arch" if image else f"{args.modality}_model"): args.model,
             "image_weights": args.weights if image else None,
             ("image_batch_size" if image else "text_batch_size"): args.batch_size,
             "pooling": args.pooling, "workers": args.workers, "device": args.device,
             "attribute_values": True if args.attribute_values else None}
    return [f"encode.{k}={v}" for k, v in pairs.items() if v is not None]


def _cmd_encode(args: argparse.Namespace) -> int:
    from psqe_ray.config import load_config
    from psqe_ray.distributed.encode import encode_modality

    cfg = load_config(_read_config_text(args.config), (args.set or []) + _encode_sets(args))
    result = encode_modality(args.dataset, args.modality, cfg.encode, force=args.force)
    print(json.dumps(result.as_dict(), sort_keys=True))
    return 0


def encode_configured(dataset_url: str, cfg) -> list[dict]:
    """The pipeline's first step: encode every selected modality that has a model configured
    (each skipped when the dataset already holds it with the same settings)."""
    todo = [m for m in cfg.modalities if cfg.encode.model_for(m)]
    if not todo:
        return []
    from psqe_ray.distributed.encode import encode_modality
    from psqe_ray.errors import NothingToEncode

    out = []
    for m in todo:
        try:
            out.append(encode_modality(dataset_url, m, cfg.encode).as_dict())
        except NothingToEncode:
            if cfg.encode.configured(m) != "auto":
                raise
            # the default model on a pair without that text (e.g. DBP15K's relation ids)
            log.info("encode %s: no %s text in the dataset; the built-in features stay", m, m)
    return out


def _cmd_seeds(args: argparse.Namespace) -> int:
    report = seeds_main(args)
    summary = {k: report[k] for k in ("method", "modalities", "seconds_total")}
    summary["seeds"] = {k: report["seeds"][k] for k in ("count", "precision", "recall")}
    print(json.dumps(summary, sort_keys=True))
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modalities", metavar="LIST",
                   help="comma-separated subset of name,relation,attribute,image (or any "
                        "feature table); default: all that are present")
    p.add_argument("--config", metavar="YAML", help="configuration file (any URL)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, e.g. stage1.budget=2000 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: in this process (default); ray: the distributed path (the "
                        "cluster of RAY_ADDRESS, else an embedded Ray)")


def _add_method(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["psqe", "uvp", "multimodal-greedy"], default=None,
                   help="seed method (default psqe)")


def _add_recipe(p: argparse.ArgumentParser) -> None:
    from psqe_ray.config import RECIPES

    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="downstream aligner (default pcmea)")


def add_seed_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``psqe-ray seeds``, shared with ``jobs/seeds.py``."""
    p.add_argument("dataset", metavar="DATASET_URL")
    p.add_argument("out", metavar="OUT_URL", help="writes OUT_URL/seeds.parquet and report.json "
                   "(with --engine ray, stages under OUT_URL/stages/, resumed on a rerun)")
    _add_method(p)
    _add_common(p)


def add_align_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``psqe-ray align``, shared with ``jobs/align.py``."""
    p.add_argument("dataset", metavar="DATASET_URL")
    p.add_argument("seeds", metavar="SEEDS_URL",
                   help="the output folder of `psqe-ray seeds`, or a seeds Parquet file "
                        "(left_id, right_id[, accepted])")
    p.add_argument("out", metavar="OUT_URL", help="writes OUT_URL/alignment.parquet and "
                   "metrics.json")
    _add_recipe(p)
    _add_common(p)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``psqe-ray run``, shared with ``jobs/run.py``."""
    p.add_argument("dataset", metavar="DATASET_URL")
    p.add_argument("out", metavar="OUT_URL", help="writes OUT_URL/seeds/, OUT_URL/align/, "
                   "OUT_URL/report.json and OUT_URL/report.html")
    _add_method(p)
    _add_recipe(p)
    _add_common(p)


def _config(args: argparse.Namespace):
    from psqe_ray.config import load_config

    overrides = {"method": getattr(args, "method", None), "seed": args.seed}
    if args.modalities:
        overrides["modalities"] = args.modalities
    sets = list(args.set or [])
    if getattr(args, "recipe", None):
        sets.append(f"align.recipe={args.recipe}")
    return load_config(_read_config_text(args.config), sets, **overrides)


def seeds_main(args: argparse.Namespace) -> dict:
    """Run ``psqe-ray seeds`` (or the seed job) from parsed options; returns the report."""
    from psqe_ray.runners import engine_for, run_seeds

    cfg = _config(args)
    preflight(args, cfg)
    engine = engine_for(args.engine)
    with engine.session():
        encode_configured(args.dataset, cfg)
        return run_seeds(args.dataset, args.out, cfg, engine=engine)


def align_main(args: argparse.Namespace) -> dict:
    """Run ``psqe-ray align`` (or the align job); returns the metrics."""
    from psqe_ray.runners import engine_for, run_align

    cfg = _config(args)
    preflight(args, cfg)
    return run_align(args.dataset, args.seeds, args.out, cfg, engine=engine_for(args.engine))


def run_main(args: argparse.Namespace) -> dict:
    """Run ``psqe-ray run`` (or the pipeline job); returns the report."""
    from psqe_ray.runners import engine_for, run_pipeline

    cfg = _config(args)
    preflight(args, cfg)

    def encode() -> list[dict]:
        return encode_configured(args.dataset, cfg)

    return run_pipeline(args.dataset, args.out, cfg, engine=engine_for(args.engine),
                        encode=encode)


def align_summary(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("recipe", "hits@1", "hits@10", "mrr", "seeds_used",
                                         "seconds_total")}


def run_summary(report: dict) -> dict:
    seeds = report.get("seeds") or {}
    return {"seeds": seeds.get("seeds", {}).get("count"),
            "seed_precision": seeds.get("seeds", {}).get("precision"),
            **align_summary(report.get("align") or {}),
            "seconds_total": report["seconds"]["total"],
            "report": report["out"].rstrip("/") + "/report.html"}


def _cmd_align(args: argparse.Namespace) -> int:
    print(json.dumps(align_summary(align_main(args)), sort_keys=True))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    print(json.dumps(run_summary(run_main(args)), sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="psqe-ray", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"psqe-ray {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser("import", help="import a DBP15K / OpenEA / MMKB / DWY100K layout folder")
    imp.add_argument("--format", required=True, choices=["dbp15k", "dwy100k", "mmkb", "openea"],
                     help="dbp15k, openea (id-converted or OpenEA's own 15K/100K layout), "
                          "mmkb (FB15K-DB15K / FB15K-YAGO15K), dwy100k")
    imp.add_argument("src", metavar="SRC_DIR", help="source folder (any fsspec URL)")
    imp.add_argument("dataset", metavar="DATASET_URL", help="destination dataset")
    imp.add_argument("--names", metavar="NAMES_JSON",
                     help="entity names as JSON [[id, [tokens]], ...] (e.g. translated names)")
    imp.add_argument("--image-features", metavar="PICKLE",
                     help="pickled {entity id: vector} image features")
    imp.add_argument("--seed", type=int, default=0,
                     help="seed of the id permutation (default 0)")
    imp.set_defaults(func=_cmd_import)

    syn = sub.add_parser("synth", help="generate a synthetic KG pair with a planted alignment")
    syn.add_argument("dataset", metavar="DATASET_URL")
    syn.add_argument("--entities", type=int, default=2000, help="entities per side")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--shared", type=float, default=0.8,
                     help="share of each side's entities that have a partner (rest dangle)")
    syn.add_argument("--avg-degree", type=float, default=6.0, help="mean degree of the latent graph")
    syn.add_argument("--degree-exponent", type=float, default=2.2,
                     help="power-law exponent of the degree distribution")
    syn.add_argument("--relations", type=int, default=40, help="relation types")
    syn.add_argument("--edge-dropout", type=float, default=0.2,
                     help="probability that a latent edge is missing from one side")
    syn.add_argument("--attributes", type=int, default=30, help="attribute types")
    syn.add_argument("--attrs-per-entity", type=float, default=3.0)
    syn.add_argument("--attr-dropout", type=float, default=0.2)
    syn.add_argument("--name-noise", type=float, default=0.15,
                     help="per-character corruption probability of names")
    syn.add_argument("--name-missing", type=float, default=0.0, help="share of entities without a name")
    syn.add_argument("--feature", action="append", metavar="MOD[:DIM[:NOISE[:MISSING]]]",
                     help="a precomputed feature modality (repeatable; default image:64:0.6:0.3)")
    syn.add_argument("--image-files", type=float, default=0.05,
                     help="share of entities that get a real PNG image file")
    syn.add_argument("--chunk-size", type=int, default=100_000, help="entities per written chunk")
    syn.set_defaults(func=_cmd_synth)

    sds = sub.add_parser("seeds", help="generate pseudo seeds (PSQE or a UVP baseline)")
    add_seed_arguments(sds)
    sds.set_defaults(func=_cmd_seeds)

    aln = sub.add_parser("align", help="train a downstream aligner (eva, mclea, meaformer, "
                         "pcmea) on seeds -> alignment.parquet + metrics.json")
    add_align_arguments(aln)
    aln.set_defaults(func=_cmd_align)

    run = sub.add_parser("run", help="the whole pipeline: encode (when configured) -> seeds "
                         "-> aligner -> report.json + report.html")
    add_run_arguments(run)
    run.set_defaults(func=_cmd_run)

    enc = sub.add_parser("encode", help="encode one modality with a model into "
                         "features/<modality> of the dataset (Ray Data actor pool)")
    enc.add_argument("dataset", metavar="DATASET_URL")
    enc.add_argument("--modality", required=True, choices=["image", "name", "relation", "attribute"])
    enc.add_argument("--model", required=True, metavar="PATH_OR_URL",
                     help="text: a transformers model directory (path or URL) or 'minilm'; "
                     "image: a torchvision ResNet name (resnet152, resnet50, resnet18...)")
    enc.add_argument("--weights", metavar="PATH_OR_URL",
                     help="image: state dict or checkpoint file (never downloaded from a hub)")
    enc.add_argument("--batch-size", type=int, help="texts / images per forward pass")
    enc.add_argument("--pooling", choices=["auto", "mean", "cls"], help="text pooling")
    enc.add_argument("--attribute-values", action="store_true",
                     help="attribute text is 'name value' instead of the attribute name")
    enc.add_argument("--workers", type=int, help="encoder actors (default: one per GPU, "
                     "else cores / 2)")
    enc.add_argument("--device", help="auto (default), cpu or cuda")
    enc.add_argument("--config", metavar="YAML", help="configuration file (its encode section)")
    enc.add_argument("--set", action="append", metavar="KEY=VALUE", help="encode.KEY=VALUE")
    enc.add_argument("--force", action="store_true", help="re-encode even if up to date")
    enc.set_defaults(func=_cmd_encode)

    ins = sub.add_parser("inspect", help="counts and validation of a dataset")
    ins.add_argument("dataset", metavar="DATASET_URL")
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.set_defaults(func=_cmd_inspect)
    return p


def job_main(argv: Sequence[str] | None, *, prog: str, doc: str, add_arguments,
             main, summary) -> int:
    """A Ray job's entry point (``jobs/*.py``): the command's options plus ``-q``, always on
    the distributed engine; prints ``summary(main(args))`` as one JSON line."""
    p = OneLineParser(prog=prog, description=doc.split("\n")[0])
    add_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = p.parse_args(argv)
    args.engine = "ray"

    def run(a: argparse.Namespace) -> int:
        print(json.dumps(summary(main(a)), sort_keys=True))
        return 0

    return run_command(run, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
