"""Trials per hour on one GPU with 1, 2 and 4 trials sharing it (what --gpus-per-trial 1, 0.5, 0.25 do),
one run. Each trial is core.engine.fit in its own process, as a Ray trial is, with its share of the
CPU threads; Ray itself is not needed.

    python tests/bench/packing.py [--model efficientnet_b0] [--img-size 128] [--epochs 2] [--packs 1,2,4]

Target (issue 5): 4 per GPU gives >= 2.5x the trials per hour of 1 per GPU for B0 at 128 px.
CUDA only; not collected by pytest.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def trial(rank: int, csv: str, img_size: int, model: str, epochs: int, threads: int, out: str) -> None:
    from core.config import TrainConfig
    from core.engine import fit

    torch.set_num_threads(threads)
    cfg = TrainConfig(csv=csv, img_size=img_size, model_name=model, pretrained=False, epochs=epochs,
                      batch_size=64, device="cuda", num_workers=max(0, threads - 1), seed=rank,
                      out_dir=os.path.join(out, f"t{rank}"))
    fit(cfg, None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--size", default="default", help="demo data set")
    p.add_argument("--img-size", type=int, default=128, help="images are resized so their short side is this")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--packs", default="1,2,4")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("packing.py needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    from core import demo

    csv = demo.demo_overrides(args.size)["csv"]
    cpus = os.cpu_count() or 1
    rows = []
    for k in [int(v) for v in args.packs.split(",")]:
        with tempfile.TemporaryDirectory() as out:
            ctx = mp.get_context("spawn")
            procs = [ctx.Process(target=trial, args=(r, csv, args.img_size, args.model, args.epochs,
                                                     max(1, cpus // k), out)) for r in range(k)]
            t0 = time.perf_counter()
            for pr in procs:
                pr.start()
            for pr in procs:
                pr.join()
            wall = time.perf_counter() - t0
            if any(pr.exitcode for pr in procs):
                print(f"{k} per GPU: a trial failed (exit codes {[pr.exitcode for pr in procs]})", file=sys.stderr)
                return 1
        rows.append((k, wall, k * 3600 / wall))
    print(f"{args.model} at {args.img_size} px, {args.epochs} epochs of the '{args.size}' demo per trial, "
          f"on {torch.cuda.get_device_name()}, {cpus} CPUs")
    print(f"{'trials/GPU':>10}{'wall s':>9}{'trials/h':>10}{'vs 1/GPU':>10}")
    for k, wall, rate in rows:
        print(f"{k:>10}{wall:>9.1f}{rate:>10.1f}{rate / rows[0][2]:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
