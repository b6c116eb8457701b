"""Ray Tune + searcher overhead, one run: the wall time of a search against the sum of its trials' own
compute time (what each trial reported as time_total_s) divided by the concurrency.

    python tests/bench/overhead.py [--trials 6] [--epochs 9] [--concurrency 2] [--space finetune]

Every trial runs all its epochs (--scheduler none), so the trials' time is fixed; with the default
settings on the demo data each trial takes about 20 s or more on a CPU core. Target (issue 5):
overhead <= 15 % with trials of 20 s or more. Below the figures, a timeline of every trial as the driver
saw it: what remains beyond per-trial costs is the first worker processes' start and the slot left idle
at the end when trials differ in length. Not collected by pytest (tests/test_bench.py runs it small).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from search import cli, cluster, plan, run  # noqa: E402


class Timeline:
    """Driver-side times of each trial's start, results and end (a Tune callback), printed below the figures."""

    def __init__(self):
        from ray.tune import Callback

        events = self.events = {}

        class _CB(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                events.setdefault(trial.trial_id, {"start": time.perf_counter(), "results": []})

            def on_trial_result(self, iteration, trials, trial, result, **info):
                events[trial.trial_id]["results"].append((time.perf_counter(), result.get("time_this_iter_s", 0.0)))

            def on_trial_complete(self, iteration, trials, trial, **info):
                events[trial.trial_id]["end"] = time.perf_counter()

            def on_experiment_end(self, trials, **info):
                timeline.fit_end = time.perf_counter()

        timeline = self
        self.fit_end = float("nan")
        self.callback = _CB()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--space", default="finetune")
    args = p.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="birdtune-overhead-") as store:
        t_start = time.perf_counter()
        p = plan.make(cli.parse_args([
            "--space", args.space, "--num-samples", str(args.trials), "--epochs", str(args.epochs),
            "--scheduler", "none", "--concurrency", str(args.concurrency), "--no-dashboard",
            "--storage-path", store, "--name", "overhead"]))
        t_prepared = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        t_ray = time.perf_counter()
        c = cluster.start(p)
        timeline = Timeline()
        t0 = time.perf_counter()
        out, _ = run.search(p, c, callbacks=(timeline.callback,))  # Tuner.fit() and the export after it
        wall = timeline.fit_end - t0
        table, reused = out.table, c.reuse_actors
        ray.shutdown()
    compute = float(table["wall_s"].sum())
    ideal = compute / args.concurrency
    print(f"{args.trials} trials x {args.epochs} epochs of the '{args.space}' space on the demo data, "
          f"{args.concurrency} at a time, {os.cpu_count()} CPUs")
    print(f"data + checks before Ray {t_prepared - t_start:.1f} s, Ray start {t_ray - t_prepared:.1f} s "
          "(once per search, not counted below)")
    print(f"trial compute time: {table['wall_s'].min():.1f}..{table['wall_s'].max():.1f} s per trial, "
          f"{compute:.1f} s in all; / concurrency = {ideal:.1f} s")
    print(f"search wall time (Tuner.fit): {wall:.1f} s -> overhead {100 * (wall / ideal - 1):.1f} %  "
          f"({(wall - ideal) / args.trials:.2f} s per trial)")
    t_first = min(e["start"] for e in timeline.events.values())
    print(f"actors reused between trials: {reused}; Tuner.fit() to the first trial's start "
          f"(first worker processes, imports): {t_first - t0:.1f} s")
    for tid, e in timeline.events.items():
        r = e["results"]
        if not r:
            print(f"  {tid}: start {e['start'] - t_first:6.1f}  no result (errored before its first epoch)")
            continue
        print(f"  {tid}: start {e['start'] - t_first:6.1f}  first result {r[0][0] - t_first:6.1f} (iter {r[0][1]:.1f})"
              f"  last {r[-1][0] - t_first:6.1f}  end {e.get('end', float('nan')) - t_first:6.1f}  "
              f"total {sum(x[1] for x in r):.1f}")
    ends = sorted(e["end"] for e in timeline.events.values() if "end" in e)
    if len(ends) >= args.concurrency:
        print(f"last {args.concurrency - 1} slot(s) idle at the end (unequal trial lengths): "
              f"{ends[-1] - ends[-args.concurrency]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
