"""A real Ray Tune search on the LCBench surrogate, printed as the trace the replay makes: each trial's config
and last epoch, in launch order. tests/test_replay.py compares the two.

    python tests/bench/ray_trace.py --task 3945 --seed 0[,1,...] --trials 8 [--compute 0,C,...] [--lcbench-dir PATH]

One worker (its process kept from trial to trial, as birdtune's local searches keep theirs; each epoch a checkpoint, from
which a trial ASHA paused goes on when promoted): per seed a
Tuner (one Ray instance for all) with birdtune's default searcher and scheduler (as search.tuning builds
them, with the settings search.plan derives), max_concurrent_trials 1, and a function trainable that
reports the surrogate's val_accuracy every epoch; one line `TRACE <seed> <compute> <json>` per seed and
--compute value. Compute 0 (the default) runs --trials trials; compute C runs no trial count and spends C
full-length trials' epochs as `--epoch-budget` does (search.budget's meter as the Tuner's stopper, the
searcher gated by it, search.tuning.BudgetStop).
Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


_SURROGATES: dict = {}  # per worker process: a reused worker loads the ONNX model once


def curve_trainable(config: dict, *, task: str, lcbench_dir: str | None) -> None:
    from ray import tune

    from lcbench import Surrogate

    if lcbench_dir not in _SURROGATES:
        _SURROGATES[lcbench_dir] = Surrogate(lcbench_dir)
    acc, _ = _SURROGATES[lcbench_dir].curves(task, [config])
    start = 0  # a trial ASHA paused and promoted goes on from its checkpoint, as birdtune's trainable does
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int(Path(d, "epoch").read_text())
    for e in range(start + 1, acc.shape[1] + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "epoch").write_text(str(e))
            tune.report({"epoch": e, "cmap": float(acc[0, e - 1])}, checkpoint=tune.Checkpoint.from_directory(d))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="3945")
    p.add_argument("--seed", default="0", help="one seed or several, comma-separated")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--compute", default="0",
                   help="comma-separated: 0 for --trials trials, C for an epoch budget of C full-length trials")
    p.add_argument("--lcbench-dir")
    p.add_argument("--storage", help="where Ray writes the experiments (default: a new temporary folder)")
    args = p.parse_args()
    import optuna
    import ray
    from ray import tune

    from lcbench import Surrogate
    from search import layout
    from search.budget import Budget, Meter
    from search.scheduler import make_scheduler
    from search.searcher import make_searcher
    from search.tuning import BudgetStop

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = Surrogate(args.lcbench_dir).space()
    grace = layout.grace_period(space.grace_period, space.epochs)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    trainable = tune.with_parameters(curve_trainable, task=args.task, lcbench_dir=args.lcbench_dir)
    storage = args.storage or tempfile.mkdtemp(prefix="birdtune-trace-")
    for seed, compute in [(int(s), int(c)) for s in args.seed.split(",") for c in args.compute.split(",")]:
        trials = None if compute else args.trials
        searcher, _ = make_searcher(layout.DEFAULT_SEARCHER, space, max_t=space.epochs, seed=seed,
                                    study_name=f"trace-{seed}", db_path=None, concurrency=1,
                                    num_samples=trials, grace_period=grace,
                                    reduction_factor=space.reduction_factor)
        scheduler = make_scheduler(layout.DEFAULT_SCHEDULER, max_t=space.epochs, grace_period=grace,
                                   reduction_factor=space.reduction_factor, num_samples=trials)
        stop = None
        if compute:  # as search.tuning builds a search with --epoch-budget
            meter = Meter(Budget(epochs=compute * space.epochs))
            searcher.use_budget(meter)
            scheduler.use_budget(meter)
            stop = BudgetStop(meter)
        run = tune.RunConfig(name=f"trace-{args.task}-{seed}-{compute}", verbose=0, storage_path=storage, stop=stop)
        tuner = tune.Tuner(trainable, run_config=run,
                           tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                                       num_samples=trials or -1, max_concurrent_trials=1,
                                                       reuse_actors=True))
        rows, grid = [], tuner.fit()
        # each Trial object (in the grid's order; a private attribute, in this bench helper only) holds the config
        # it was given, also for a trial created but cut before it ran, whose Result has no config
        for r, trial in zip(grid, grid._experiment_analysis.trials):
            # Ray's trial folders carry the trial's number in creation order: <name>_<id>_<n>_<params>
            n = int(re.search(r"_[0-9a-f]{8}_(\d+)_", os.path.basename(r.path)).group(1))
            epochs = int(r.metrics_dataframe["epoch"].max()) if r.metrics_dataframe is not None and \
                "epoch" in r.metrics_dataframe else 0  # (a trial the budget cut before its first epoch)
            rows.append((n, dict(config=trial.config, epochs=epochs)))
        print(f"TRACE {seed} {compute} " + json.dumps([row for _, row in sorted(rows, key=lambda x: x[0])]), flush=True)
    if not args.storage:
        shutil.rmtree(storage, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
