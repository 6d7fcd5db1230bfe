"""Encoder throughput: texts/s and images/s, model alone and through the Ray Data pipeline.

    python benchmarks/encode_throughput.py [--texts 5000] [--images 128] [--text-model minilm]
                                           [--arch resnet152] [--device auto]

Synthetic inputs from `psqe-ray synth` (names; PNG images at --image-px).  Image weights are
random (`--weights` to give real ones): the forward cost does not depend on them.  Prints one
JSON line per measurement: model-only (the encoder class called in this process) and pipeline
(`encode_modality`: Ray Data actor pool, reading, aggregation and the atomic dataset commit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time

import numpy as np


def _machine(device: str) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if device != "cpu" and torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "gpu": gpu, "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--texts", type=int, default=5000, help="entities per side for the text run")
    p.add_argument("--images", type=int, default=128, help="images in total")
    p.add_argument("--text-model", default="minilm")
    p.add_argument("--arch", default="resnet152")
    p.add_argument("--weights", default=None)
    p.add_argument("--image-px", type=int, default=256, help="synthetic image side")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", action="append", default=[], choices=["text", "image", "pipeline"])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from psqe_ray.config import EncodeConfig
    from psqe_ray.distributed.encode import encode_modality
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.testing.synth import SynthConfig, synthesize

    tmp = tempfile.mkdtemp(prefix="psqe-enc-bench-")
    machine = _machine(args.device)
    if "text" not in args.skip:
        from psqe_ray.encoders.text import TextEncoder

        url = f"{tmp}/text"
        synthesize(url, SynthConfig(entities=args.texts, image_files=0.0))
        names = [n or "" for n in Dataset(url).table("entities").column("name").to_pylist()]
        enc = TextEncoder(args.text_model, device=args.device)
        enc.encode(names[:256])  # warm-up
        t = time.perf_counter()
        enc.encode(names)
        dt = time.perf_counter() - t
        print(json.dumps({"what": "text model", "model": args.text_model, "device": str(enc.device),
                          "texts": len(names), "seconds": round(dt, 2),
                          "texts_per_s": round(len(names) / dt, 1), **machine}), flush=True)
        if "pipeline" not in args.skip:
            t = time.perf_counter()
            res = encode_modality(url, "name", EncodeConfig(name_model=args.text_model,
                                                            device=args.device))
            print(json.dumps({"what": "text pipeline", "model": args.text_model,
                              "texts": res.units, "encode_seconds": res.seconds,
                              "texts_per_s": res.per_second, "workers": res.workers,
                              "resources": res.resources,
                              "wall_s": round(time.perf_counter() - t, 2), **machine}), flush=True)
    if "image" not in args.skip:
        from psqe_ray.encoders.image import ImageEncoder

        url = f"{tmp}/image"
        n_side = max(2, args.images // 2)
        synthesize(url, SynthConfig(entities=n_side, image_files=1.0, image_size=args.image_px))
        ds = Dataset(url)
        urls = [ds.url_of(u) for u in ds.table("images").column("url").to_pylist()]
        enc = ImageEncoder(args.arch, args.weights, device=args.device)
        enc.encode_paths(urls[:4])  # warm-up
        t = time.perf_counter()
        vec, present, _ = enc.encode_paths(urls)
        dt = time.perf_counter() - t
        assert present.all() and np.isfinite(vec).all()
        print(json.dumps({"what": "image model", "arch": args.arch, "device": str(enc.device),
                          "images": len(urls), "image_px": args.image_px,
                          "seconds": round(dt, 2), "images_per_s": round(len(urls) / dt, 2),
                          **machine}), flush=True)
        if "pipeline" not in args.skip:
            t = time.perf_counter()
            res = encode_modality(url, "image", EncodeConfig(
                image_arch=args.arch, image_weights=args.weights or "", device=args.device))
            print(json.dumps({"what": "image pipeline", "arch": args.arch, "images": res.units,
                              "encode_seconds": res.seconds, "images_per_s": res.per_second,
                              "workers": res.workers, "resources": res.resources,
                              "wall_s": round(time.perf_counter() - t, 2), **machine}), flush=True)


if __name__ == "__main__":
    main()
