"""Record learning curves once, for the replay benchmark: configs sampled uniformly from a search space,
each trained for the space's full epochs with 2 training seeds, every epoch's cmAP, losses and seconds.

    python tests/bench/record.py --space finetune --size tiny --configs 256 [--seeds 2] [--workers 2]

Writes tests/bench/data/<space>-<size>.parquet: one row per (config, seed, epoch) with the searched
values. Resumable: each finished (config, seed) is kept under tests/bench/data/.parts/ and skipped on a
rerun; the table is rebuilt from all parts at the end. Trials run in parallel, one CPU thread each (as
the search runs them with --cpus-per-trial 1). Not collected by pytest.
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402

from benchmarks import random_configs  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
_DATA = None  # decoded images, one copy per worker process


def base_config(space_name: str, size: str) -> dict:
    import spaces
    from core import demo

    space = spaces.get(space_name).on_demo()
    base = dict(demo.demo_overrides(size))
    if space.init_from_demo_base:
        base["init_checkpoint"] = str(demo.ensure_base_checkpoint(size))
    base.update(space.base)
    base.update(epochs=space.epochs, device="cpu", num_workers=0)
    return base


def _init(csv: str, img_size: int) -> None:
    global _DATA
    import torch

    from core.data import load_data

    torch.set_num_threads(1)
    _DATA = load_data(csv, img_size)


def train_one(base: dict, config_id: int, params: dict, seed: int) -> list[dict]:
    from core.config import TrainConfig
    from core.engine import fit

    rows = []
    last = [time.perf_counter()]

    def report(m, _ckpt):
        now = time.perf_counter()
        rows.append(dict(config_id=config_id, seed=seed, epoch=int(m["epoch"]), cmap=float(m["cmap"]),
                         val_loss=float(m["val_loss"]), train_loss=float(m["train_loss"]), seconds=now - last[0],
                         status=m.get("status", "ok"), **params))
        last[0] = now

    with tempfile.TemporaryDirectory(prefix="birdtune-record-") as tmp:
        cfg = TrainConfig.from_dict({**base, **params, "seed": seed, "out_dir": tmp})
        fit(cfg, report, data=_DATA, progress=False)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="finetune")
    p.add_argument("--size", default="tiny", choices=["tiny", "default"], help="demo data set")
    p.add_argument("--configs", type=int, default=256)
    p.add_argument("--seeds", type=int, default=2, help="training seeds per config")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--sample-seed", type=int, default=0)
    args = p.parse_args()
    import spaces

    space = dataclasses.replace(spaces.get(args.space).on_demo(), demo_size=args.size)
    base = base_config(args.space, args.size)
    configs = random_configs(space, args.configs, args.sample_seed)
    parts = DATA / ".parts" / f"{args.space}-{args.size}"
    parts.mkdir(parents=True, exist_ok=True)
    todo = [(i, s) for i in range(len(configs)) for s in range(args.seeds) if not (parts / f"{i}-{s}.parquet").is_file()]
    print(f"{args.space} on the {args.size} demo: {len(configs)} configs x {args.seeds} seeds x {space.epochs} epochs; "
          f"{len(configs) * args.seeds - len(todo)} already recorded, {len(todo)} to go, {args.workers} workers",
          flush=True)
    t0 = time.time()
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                             initargs=(base["csv"], base["img_size"])) as pool:
        futures = {pool.submit(train_one, base, i, configs[i], s): (i, s) for i, s in todo}
        for n, f in enumerate(as_completed(futures), 1):
            i, s = futures[f]
            tmp = parts / f".{i}-{s}.tmp"
            pd.DataFrame(f.result()).to_parquet(tmp, index=False)
            os.replace(tmp, parts / f"{i}-{s}.parquet")
            if n % 10 == 0 or n == len(todo):
                done = time.time() - t0
                print(f"  {n}/{len(todo)} runs in {done / 60:.1f} min, ~{done / n * (len(todo) - n) / 60:.0f} min left",
                      flush=True)
    files = sorted(parts.glob("*.parquet"))
    table = pd.concat([pd.read_parquet(f) for f in files]).sort_values(["config_id", "seed", "epoch"])
    table = table[table["config_id"] < args.configs].reset_index(drop=True)
    out = DATA / f"{args.space}-{args.size}.parquet"
    table.to_parquet(out, index=False)
    print(f"wrote {out}: {table['config_id'].nunique()} configs, {len(table)} rows, {out.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
