"""Where a search loses its best config: for each simulated search (tests/bench/replay.py's simulate), the normalised
regret of the best config among those it tried, among those it took to each of its rungs, and of its pick (each
scored at full length, as the replay scores a pick). A large step from "tried" to the first rung says the first
rung's ranks do not hold on this benchmark; a large step from the last rung to the pick, that the pick is chosen
on too few epochs. `--per-task` adds a row per task: where one method loses to another, whether on the configs it
tried or at its rungs.

    python tests/bench/rung_loss.py birdtune --benchmark lcbench --compute 4 --workers 2 --seeds 10 [--per-task]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]

import benchmarks  # noqa: E402
import replay  # noqa: E402


def losses(job: tuple) -> dict[str, float]:
    """One search's regrets: 'tried' (any config it ran), '>=R' (those it ran to R epochs or more, R one of
    `rungs`), 'pick'."""
    method, bench_name, task, compute, workers, seed, rungs = job
    bench = replay.get_benchmark(bench_name)
    best, median = benchmarks.reference(bench, task)
    out = replay.simulate(method, bench_name, task, None, workers, seed, trace=True, compute=compute)
    quality = np.array(out["trace_quality"])  # scored as the replay scores its pick
    reached = np.array([epochs for _, _, epochs in out["trace"]])
    row = {"pick": float(out["regret"]), "tried": (best - float(quality.max())) / (best - median)}
    for rung in rungs:
        if (reached >= rung).any():
            row[f">={rung}"] = (best - float(quality[reached >= rung].max())) / (best - median)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", help="as replay.py's --methods names one, e.g. birdtune or birdtune@asha:reduction_factor=2")
    p.add_argument("--benchmark", default="lcbench", help="lcbench, birdtune-default or FILE.py:NAME (default lcbench)")
    p.add_argument("--tasks", help="dev (the default), held, all or task ids, comma-separated")
    p.add_argument("--compute", type=int, default=4, help="budget in full-length trials' epochs (default 4)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--per-task", action="store_true", help="also one row per task (its seeds' mean)")
    args = p.parse_args()
    try:
        bench = replay.get_benchmark(args.benchmark)
        tasks = benchmarks.select_tasks(bench, args.tasks)
        space = bench.space()
        _, scheduler = replay.make_method(args.method, space, 0, None, args.workers)  # a bad method: one line here
        rungs = [int(r) for r in getattr(scheduler, "_rungs", [])] + [space.epochs]  # birdtune's ASHA's, and max_t
        for t in tasks:
            benchmarks.reference(bench, t)
    except Exception as e:  # a missing surrogate, a bad task, benchmark or method: one line
        print(f"rung_loss: {e}", file=sys.stderr)
        return 2
    jobs = [(args.method, args.benchmark, t, args.compute, args.workers, s, rungs)
            for t in tasks for s in range(args.first_seed, args.first_seed + args.seeds)]
    with mp.get_context("spawn").Pool(args.processes) as pool:
        rows = list(tqdm(pool.imap(losses, jobs), total=len(jobs), desc="searches", file=sys.stderr))
    keys = ["tried"] + sorted({k for r in rows for k in r if k.startswith(">=")}, key=lambda k: int(k[2:])) + ["pick"]
    print(f"{args.method} on {args.benchmark}, {len(tasks)} task(s) x {args.seeds} seeds, compute {args.compute} x "
          f"{args.workers} workers: mean normalised regret of the best config")
    for k in keys:
        mean, n = column(rows, k)
        label = {"tried": "it tried", "pick": "(its pick)"}.get(k, f"it ran to {k[2:]}+ epochs")
        print(f"  {label:<22} {mean:.3f}  ({n} searches)")
    if args.per_task:
        print("per task, the mean over its seeds (-: no search of the task got there)")
        print(f"  {'task':<10}" + "".join(f"{k:>8}" for k in keys))
        for t in tasks:
            mine = [r for (_, _, task, *_), r in zip(jobs, rows) if task == t]
            cells = [column(mine, k)[0] for k in keys]
            print(f"  {str(t):<10}" + "".join(f"{c:>8.3f}" if c is not None else f"{'-':>8}" for c in cells))
    return 0


def column(rows: list[dict[str, float]], key: str) -> tuple[float | None, int]:
    """The mean of `key` over the searches that have it (None if none does), and how many have it."""
    have = [r[key] for r in rows if key in r]
    return (float(np.mean(have)) if have else None), len(have)


if __name__ == "__main__":
    sys.exit(main())
