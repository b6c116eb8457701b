"""Search quality at an equal number of trials, one run: (a) random search with every trial at full
length, (b) a stock OptunaSearch + ASHAScheduler set-up, (c) birdtune's default search, and (c+rv) the
same with top-k re-validation. Each method runs with several seeds on the demo data.

    python tests/bench/hpo.py [--size tiny|default] [--seeds 3] [--trials 16] [--revalidate-top 2]

Per method it prints the median over seeds of: the best cmAP any trial reached (validation fold 0), the
cmAP of the config the method picks retrained on a held-out fold (4) that no method looks at, total
trial-epochs (search + re-validation) and wall time, each with its ratio to (a). Not collected by pytest.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd  # noqa: E402

import spaces  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.engine import fit  # noqa: E402
from search import cli, cluster, layout, plan, run  # noqa: E402

HELD_OUT = 4  # validation fold of the final check; the searches validate on fold 0, re-validation on 1 and 2
METHODS = {
    "a": "random, all trials full length",
    "b": "stock OptunaSearch + ASHA",
    "c": f"birdtune default ({layout.DEFAULT_SEARCHER} + asha)",
    "c+rv": "birdtune + re-validation",
}


def stock(p, n):
    """What a user writes from Ray's docs: OptunaSearch on the define-by-run space and ASHAScheduler with Ray's
    defaults (grace 1, reduction 4), from the same first trial as birdtune (the space's base config)."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    spec = p.spec
    searcher = OptunaSearch(space=p.space.define, metric=spaces.METRIC, mode=spaces.MODE, seed=spec.seed,
                            points_to_evaluate=[dict(x) for x in p.space.points])
    scheduler = ASHAScheduler(time_attr=spaces.TIME_ATTR, metric=spaces.METRIC, mode=spaces.MODE, max_t=spec.max_t)
    return searcher, None, scheduler


def held_out_cmap(exp: str, work: str) -> float:
    """Retrain the exported best config at full length with the held-out fold as validation."""
    cfg = TrainConfig.load(os.path.join(exp, "best", "config.yaml"))
    cfg = dataclasses.replace(cfg, fold=HELD_OUT, out_dir=work, device="cpu")
    return float(fit(cfg, lambda m, c: None, progress=False)["best_cmap"])


def one(method: str, space_name: str, seed: int, trials: int, store: str, top: int, held_out: bool = True) -> dict:
    args = ["--space", space_name, "--num-samples", str(trials), "--seed", str(seed), "--no-dashboard",
            "--storage-path", store, "--name", f"{method}-s{seed}"]
    if method == "a":
        args += ["--searcher", "random", "--scheduler", "none"]
    if method == "c+rv":
        args += ["--revalidate-top", str(top), "--folds", "1,2"]
    p = plan.make(cli.parse_args(args))
    t0 = time.perf_counter()
    out, _ = run.search(p, cluster.start(p), **({"make": stock} if method == "b" else {}))
    table = out.table
    rv_epochs = int(out.revalidation["epochs"].sum()) if out.revalidation is not None else 0
    wall = time.perf_counter() - t0
    held = held_out_cmap(p.options.exp, os.path.join(store, f"heldout-{method}-s{seed}")) if held_out else float("nan")
    return dict(method=method, seed=seed, best_cmap=float(table["best_cmap"].max()), held_out=held,
                trial_epochs=int(table["epochs"].sum()) + rv_epochs, wall_s=wall, trials=len(table),
                stopped_early=int((table["status"] == "stopped_early").sum()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=["tiny", "default"], help="demo data set")
    p.add_argument("--space", default="finetune")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, help="trials per search (default: the space's demo setting)")
    p.add_argument("--revalidate-top", type=int, default=2)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--csv-out", help="also write the per-run rows here")
    p.add_argument("--no-held-out", action="store_true", help="skip retraining each pick on the held-out fold")
    args = p.parse_args()
    import ray

    base = spaces.get(args.space).on_demo()
    name = f"{args.space}-bench-{args.size}"
    spaces.SPACES[name] = dataclasses.replace(base, name=name, demo_size=args.size, demo={})
    trials = args.trials or base.num_samples
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory(prefix="birdtune-hpo-") as store:
        for seed in range(args.seeds):
            for method in args.methods.split(","):
                r = one(method, name, seed, trials, store, args.revalidate_top, held_out=not args.no_held_out)
                print(f"  seed {seed} {method:<5} best {r['best_cmap']:.4f} held-out {r['held_out']:.4f} "
                      f"trial-epochs {r['trial_epochs']:4d} stopped early {r['stopped_early']:2d} "
                      f"wall {r['wall_s']:6.1f} s", flush=True)
                rows.append(r)
    df = pd.DataFrame(rows)
    if args.csv_out:
        df.to_csv(args.csv_out, index=False)
    med = df.groupby("method", sort=False)[["best_cmap", "held_out", "trial_epochs", "wall_s"]].median()
    a = med.loc["a"] if "a" in med.index else None
    print(f"\n{args.space} space on the {args.size} demo data: {trials} trials of up to {base.epochs} epochs "
          f"(birdtune: ASHA grace {base.grace_period}, reduction {base.reduction_factor}; stock: Ray's defaults), "
          f"seeds 0..{args.seeds - 1}, "
          f"{os.cpu_count()} CPUs; medians over seeds, ratios to (a)\n")
    print(f"{'method':<40} {'best cmAP':>9} {'x(a)':>6} {'held-out':>9} {'x(a)':>6} {'trial-ep':>8} {'x(a)':>6} "
          f"{'wall s':>7} {'x(a)':>6}")
    for m, r in med.iterrows():
        ratio = (lambda k: f"{r[k] / a[k]:6.3f}") if a is not None else (lambda k: "     -")
        print(f"({m}) {METHODS[m]:<35} {r.best_cmap:9.4f} {ratio('best_cmap')} {r.held_out:9.4f} "
              f"{ratio('held_out')} {r.trial_epochs:8.0f} {ratio('trial_epochs')} {r.wall_s:7.1f} {ratio('wall_s')}")
    if a is not None and "c" in med.index:
        c = med.loc["c"]
        print(f"\ntargets: (c) best cmAP >= 99% of (a): {c.best_cmap / a.best_cmap:.3f} "
              f"{'met' if c.best_cmap >= 0.99 * a.best_cmap else 'MISSED'}; (c) trial-epochs <= 35% of (a): "
              f"{c.trial_epochs / a.trial_epochs:.3f} {'met' if c.trial_epochs <= 0.35 * a.trial_epochs else 'MISSED'}"
              + (f"; (c) median best >= (b): {c.best_cmap:.4f} vs {med.loc['b'].best_cmap:.4f} "
                 f"{'met' if c.best_cmap >= med.loc['b'].best_cmap else 'MISSED'}" if "b" in med.index else ""))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
