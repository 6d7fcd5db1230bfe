"""GPU check: the CUDA paths of psqe-ray on one GPU, every figure printed as one JSON line.

Prepare here (CPU machine, once per session that has a GPU lent):

    python benchmarks/gpu_check.py --prepare        # .gpu/: DBP15K fr_en imported, wheels

``--prepare`` imports DBP15K fr_en into ``.gpu/fr_en`` and downloads the wheels the device machine
lacks (faiss-cpu, for K-means and the search layer; the device image has PyTorch, PyG, pyarrow,
scikit-learn, fsspec, no Ray and no FAISS) into ``.gpu/whl``; add ``/.gpu/`` to
``.git/info/exclude``.  Then one device call (the ``run`` tool), ``carry: [".gpu"]``::

    pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl; \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --synth 1000000

What it runs, on ``--device`` (default cuda), each step timed:

1. ``kernels``: the GAT aggregation and sparse-input products on the device against the CPU
   kernels (max abs difference of outputs and gradients).
2. ``fr_en``: PSQE seeds in-process (Stage II training on the device; the search layer) and the
   default aligner (training and embedding on the device): per-stage seconds, seed count and
   precision, Hits@1/10, MRR.
3. ``synth``: the same on a synthetic pair of ``--synth`` entities per side (generated there).

Ray is absent on the device machine, so this exercises the in-process path; the Ray path runs
the same functions inside Ray Train workers and search actors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
GPU_DIR = REPO / ".gpu"


def emit(**row) -> None:
    print(json.dumps(row, default=str), flush=True)


def prepare() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from import_real import PAIRS

    GPU_DIR.mkdir(exist_ok=True)
    fmt, src, names = PAIRS["fr_en"]
    dst = GPU_DIR / "fr_en"
    if not (dst / "_MANIFEST.json").exists():
        subprocess.run([sys.executable, "-m", "psqe_ray.cli", "-q", "import", "--format", fmt,
                        str(src), str(dst), "--names", str(names)], check=True)
    whl = GPU_DIR / "whl"
    whl.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "-d", str(whl), "faiss-cpu==1.15.1"], check=True)
    size = sum(f.stat().st_size for f in GPU_DIR.rglob("*") if f.is_file())
    emit(step="prepare", folder=str(GPU_DIR), mib=round(size / 2**20, 1))


def check_kernels(device: str) -> None:
    import numpy as np
    import scipy.sparse as sp
    import torch
    from torch_geometric.nn import GATConv

    from psqe_ray.core.kernels import Adjacency, gat_untransformed, sparse_linear

    rng = np.random.default_rng(0)
    n_src, n_dst, d = 20000, 5000, 128
    adj = Adjacency(np.vstack([rng.integers(0, n_src, 200000), rng.integers(0, n_dst, 200000)]),
                    n_src, n_dst)
    torch.manual_seed(0)
    conv = GATConv(d, 64, heads=2, concat=True, add_self_loops=False)
    x0 = torch.randn(n_src, d)
    f = sp.random(30000, 1024, density=0.02, format="csr", random_state=1, dtype=np.float32)
    w0 = torch.randn(128, 1024)
    rows = rng.integers(0, 30000, 4000)

    def run(dev):
        c = conv.to(dev)
        c.zero_grad()
        x = x0.to(dev).requires_grad_(True)
        w = w0.to(dev).requires_grad_(True)
        t = time.perf_counter()
        y = gat_untransformed(c, x, adj, c.lin.weight)
        z = sparse_linear(f, rows, w, None)
        (y.square().sum() + z.sin().sum()).backward()
        if dev != "cpu":
            torch.cuda.synchronize()
        out = [v.detach().cpu() for v in (y, z, x.grad, w.grad, c.att_src.grad)]
        return out, time.perf_counter() - t

    cpu, t_cpu = run("cpu")
    run(device)  # warm-up
    dev, t_dev = run(device)
    diff = max(float((a - b).abs().max()) for a, b in zip(cpu, dev))
    emit(step="kernels", device=device, max_abs_diff=diff, seconds_cpu=round(t_cpu, 3),
         seconds_device=round(t_dev, 3))


def pipeline(name: str, url: str, device: str) -> None:
    import numpy as np

    from psqe_ray.align.trainer import Aligner
    from psqe_ray.config import load_config
    from psqe_ray.core.alignment_quality import alignment_metrics
    from psqe_ray.core.psqe import SeedGenerator
    from psqe_ray.core.train import joint_graph, model_inputs
    from psqe_ray.runners.seeds import evaluate
    from psqe_ray.io.dataset import Dataset
    from psqe_ray.io.load import load_pair

    t0 = time.perf_counter()
    cfg = load_config(None, [f"distributed.device={device}"])
    pair = load_pair(Dataset(url))
    t_load = time.perf_counter() - t0
    gen = SeedGenerator(cfg).fit(pair)
    q = evaluate(gen, pair)
    emit(step=f"{name}/seeds", device=device, entities=[pair.left.n, pair.right.n],
         load_seconds=round(t_load, 1), seeds=q["seeds"]["count"],
         precision=q["seeds"]["precision"],
         stages=[(s["name"], s["count"], s["seconds"]) for s in gen.stages_],
         train_seconds=gen.train_seconds_)
    t = time.perf_counter()
    mods, _ = gen.prepare(pair)
    feats = model_inputs(mods)
    graph = joint_graph(pair.left.neighbours(), pair.right.neighbours(), pair.left.n)
    aligner = Aligner(cfg.align, cfg.seed, gen.searcher, device).fit(
        feats, graph, pair.left.n, gen.seeds_[0], gen.seeds_[1])
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    left, right = aligner.embeddings_
    m = alignment_metrics(left, right, pair.gold[0], pair.gold[1], searcher=gen.searcher) \
        if pair.gold is not None else {}
    emit(step=f"{name}/align", device=device, recipe=cfg.align.recipe,
         train_seconds=round(t_train, 1), eval_seconds=round(time.perf_counter() - t, 1),
         hits1=m.get("hits@1"), hits10=m.get("hits@10"), mrr=m.get("mrr"),
         ranking=m.get("ranking"), seconds_total=round(time.perf_counter() - t0, 1),
         pairs_added=[int(x) for x in aligner.added_], mean=float(np.mean(left)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prepare", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--synth", type=int, default=0, help="entities per side (0: skip)")
    p.add_argument("--skip-real", action="store_true")
    args = p.parse_args()
    if args.prepare:
        prepare()
        return
    import torch

    emit(step="env", torch=torch.__version__, cuda=torch.cuda.is_available(),
         gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
         cpus=os.cpu_count())
    for step, fn in (("kernels", lambda: check_kernels(args.device)),
                     ("fr_en", lambda: None if args.skip_real else
                      pipeline("fr_en", str(GPU_DIR / "fr_en"), args.device))):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - report and go on to the next step
            emit(step=step, error=f"{type(exc).__name__}: {exc}")
    if args.synth:
        from psqe_ray.testing.synth import SynthConfig, synthesize

        url = f"/tmp/gpu-check-synth-{args.synth}"
        t = time.perf_counter()
        if not Path(url, "_MANIFEST.json").exists():
            shutil.rmtree(url, ignore_errors=True)
            synthesize(url, SynthConfig(entities=args.synth, seed=0))
        emit(step="synth/generate", entities=args.synth, seconds=round(time.perf_counter() - t))
        try:
            pipeline(f"synth-{args.synth}", url, args.device)
        except Exception as exc:  # noqa: BLE001
            emit(step="synth", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
