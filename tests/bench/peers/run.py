"""Run one peer tool's methods on a benchmark's tasks, equal-compute cells and seeds, in the tool's own venv
(tests/bench/peers/make_venvs.py), appending one JSON line per run; runs already in the file are skipped, so
an interrupted recording continues, and so are the runs already in --skip (a merged peers-<benchmark>.json).

    <tool venv>/bin/python tests/bench/peers/run.py --tool optuna [--methods optuna-hyperband,optuna-sha]
        [--benchmark lcbench] [--tasks all|dev|held|ID,...] [--compute 4,8,16,32] [--workers 2,4] [--seeds 0-9]
        [--processes 2] [--skip RECORDED.json] --out FILE.jsonl

Each adapter (tests/bench/peers/<tool>_peer.py) gives METHODS and run(bench, task, seed, workers, compute,
method) -> its record (tests/bench/peers/common.py). Not collected by pytest.
"""
from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ADAPTERS = {"optuna": "optuna_peer", "synetune": "synetune_peer", "smac": "smac_peer", "dehb": "dehb_peer",
            "neps": "neps_peer"}


def seeds_of(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def key(r: dict) -> tuple:
    """A run's identity: method, task, seed, workers, compute."""
    return r["method"], str(r["task"]), r["seed"], r["workers"], r["compute"]


def _job(args) -> dict:
    tool, bench_spec, task, seed, workers, compute, method = args
    import benchmarks

    module = importlib.import_module(ADAPTERS[tool])
    bench = benchmarks.load(bench_spec)
    t0 = time.time()
    try:
        out = module.run(bench, task, seed, workers, compute, method)
    except Exception as e:  # one run's failure is recorded, not the end of the recording
        return dict(tool=tool, method=method, task=str(task), seed=seed, workers=workers, compute=compute,
                    error=f"{type(e).__name__}: {e}"[:500], seconds=round(time.time() - t0, 2))
    return {**out, "benchmark": bench.name}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tool", required=True, choices=sorted(ADAPTERS))
    p.add_argument("--methods", help="default: all of the tool's")
    p.add_argument("--benchmark", default="lcbench")
    p.add_argument("--tasks", default="dev", help="all, dev, held (the tasks outside dev) or comma-separated ids")
    p.add_argument("--compute", default="4,8,16,32")
    p.add_argument("--workers", default="2,4")
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip", help="a merged peers-<benchmark>.json: its runs are not run again")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    sys.path.insert(0, str(HERE.parent))
    import benchmarks

    module = importlib.import_module(ADAPTERS[args.tool])
    methods = args.methods.split(",") if args.methods else list(module.METHODS)
    try:
        bench = benchmarks.load(args.benchmark)
        tasks = benchmarks.select_tasks(bench, args.tasks)
    except benchmarks.BadBenchmark as e:
        print(f"run: {e}", file=sys.stderr)
        return 2
    done = set()
    out = Path(args.out)
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                done.add(key(r))
    recorded = set()
    if args.skip and Path(args.skip).is_file():
        recorded = {key(r) for r in json.loads(Path(args.skip).read_text())["runs"] if r["tool"] == args.tool}
    done |= recorded
    jobs = [(args.tool, args.benchmark, t, s, w, c, m) for c in map(int, args.compute.split(","))
            for w in map(int, args.workers.split(",")) for t in tasks for s in seeds_of(args.seeds) for m in methods
            if (m, t, s, w, c) not in done]
    print(f"{args.tool}: {len(jobs)} runs ({len(done - recorded)} already in {out}"
          + (f", {len(recorded)} in {args.skip})" if recorded else ")"), flush=True)
    t0, errors = time.time(), 0
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, out.open("a") as fh:
        for i, r in enumerate(pool.imap_unordered(_job, jobs), 1):
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            errors += "error" in r
            if "error" in r:
                print(f"  {r['method']} task {r['task']} seed {r['seed']} W{r['workers']} C{r['compute']}: {r['error']}",
                      flush=True)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs, {time.time() - t0:.0f} s", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
