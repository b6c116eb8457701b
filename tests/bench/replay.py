"""Search quality on learning curves nobody has to train again: many simulated searches, paired by seed, per
benchmark task, method, cell and worker count, as Syne Tune's simulator backend does it.

    python tests/bench/replay.py [--benchmark lcbench|birdtune-default|birdtune-tiny|FILE.py:NAME] [--tasks dev|held|all|ID,...]
                                 [--lcbench-dir PATH] [--seeds 100] [--first-seed 0] [--budgets 16,32]
                                 [--compute 4,8,16,32] [--workers 2,4] [--methods random_full,stock,birdtune]
                                 [--peers FILE] [--json PATH] [--plots DIR] [--processes 2] [--timing]
    python tests/bench/replay.py --benchmark lcbench --utilisation 1024x256 [--tasks dev|held|all|ID,...] [--methods METHOD]

Benchmarks (tests/bench/benchmarks.py holds the protocol any benchmark follows, and the built-ins):
`lcbench`, YAHPO Gym's LCBench surrogate (52 epochs of val_accuracy; without --tasks its 17 development tasks);
`birdtune-default` / `birdtune-tiny`, this project's recorded finetune tables (tests/bench/tables.py); or
`FILE.py:NAME`, any object with name, tasks, dev_tasks, space() and curves(task, configs).

Cells. `--budgets N` (trial-count cells): every method runs N trials. `--compute C` (equal-compute cells):
every method may spend C full-length trials' worth of trial-epochs (C x the benchmark's epochs) and starts
trials until that would be spent: birdtune through the same code as `--epoch-budget` (search.budget: its
searcher starts a trial while the running ones' next rungs and the new one's first rung fit, its ASHA pauses
trials at its rungs and continues the ones it promotes before a new trial starts, as Ray's controller asks it,
and the search ends at the budget); random_full starts a full-length trial only while one fits; stock and
random_asha, as a Ray Tune script with a trial-epochs stopper would, start trials while the budget is not
spent and are cut when it is.

A simulated search drives the real objects through Ray Tune's public interfaces, without starting Ray: a
Searcher's suggest / on_trial_result / on_trial_complete and a TrialScheduler's on_trial_add /
on_trial_result / on_trial_complete, in the order Ray's TuneController calls them (tests/test_replay.py
checks it against a real Tuner). W workers run trials on a simulated clock; a stopped trial's later epochs
never happen; the searcher's own time per suggestion (measured) delays the trial it starts.

A config's quality is its best epoch at full length (a benchmark may define its own: a recorded table's is
the mean over its runs). A search's pick is its trial with the best observed score (what birdtune exports),
scored at full length; its regret is (best - pick) / (best - median), best and median over a fixed random
sample of 10,000 configs of the task (tests/bench/benchmarks.py), so tasks can be pooled.

Methods, all starting from the space's base config (its points[0]): random_full (random search, every trial
at full length), random_asha (random + Ray's ASHA with its defaults), stock (OptunaSearch with Optuna's
defaults + Ray's ASHAScheduler with its defaults: grace 1, reduction 4), birdtune (the default searcher with
the default scheduler and the settings a search derives), and variants
`searcher[:attr=value][@scheduler[:grace_period=N:reduction_factor=N]]`. The random methods draw through
Optuna's RandomSampler, so that under one seed every Optuna-based method starts from the same configs.
`--peers FILE` adds the tools users pick instead (tests/bench/peers/: Optuna's pruners, Syne Tune, SMAC3,
DEHB, NePS), recorded once per benchmark, task, cell and seed.

`--utilisation 1024x256` replays only birdtune's default search of 1,024 trials on 256 workers per task and
prints its worker utilisation (busy worker-time over workers x wall) and where the idle time went: waiting for
the driver's suggestion, waiting for the driver to take a result, or no trial to start; with the tail fill
(search.scheduler.TailFill, on from 8 workers as in a real search: its scheduler's choose, with the simulated
clock, restarts a stopped trial where Ray's choose_trial_to_run would; a simulated restart costs nothing, as a
simulated trial start does not), how many stopped trials it continued and for how many epochs.
`--methods birdtune@asha:tail_fill=off` replays the search without it.

Per cell: mean normalised regret with a bootstrap 95 % interval; mean rank across tasks; birdtune against
stock and random_full paired by (task, seed) (one-sided Wilcoxon, bootstrap interval of the difference,
per-task wins); every method against every other by a one-sided Wilcoxon signed-rank test over the tasks'
mean regrets (over (task, seed) against stock and random_full; on a benchmark of one task, such as
birdtune-default, a one-sided Mann-Whitney U test over the two methods' runs, whose seeds are each their own);
Holm's correction across the others and the run's cells. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import benchmarks  # noqa: E402

METRIC, MODE = "cmap", "max"
BASELINES = ("random_full", "random_asha", "stock")
_BENCH: dict[str, object] = {}


def get_benchmark(spec: str, lcbench_dir: str | None = None):
    """The benchmark `spec` names (benchmarks.load), built once per process."""
    if lcbench_dir:
        os.environ["BIRDTUNE_LCBENCH_DIR"] = lcbench_dir
    if spec not in _BENCH:
        _BENCH[spec] = benchmarks.load(spec)
    return _BENCH[spec]


class FakeTrial:
    """What Ray's schedulers read of a Trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.status = trial_id, config, "RUNNING"


def parse_method(name: str) -> tuple[str, list[str], str, list[str]]:
    """'searcher[:key=value...][@scheduler[:key=value...]]' -> (searcher, its options, scheduler, its options);
    'birdtune' is the default searcher with the default scheduler."""
    from search.layout import DEFAULT_SCHEDULER, DEFAULT_SEARCHER

    left, _, right = name.partition("@")
    kind, *opts = (DEFAULT_SEARCHER if left == "birdtune" else left).split(":")
    sched, *sopts = (right or DEFAULT_SCHEDULER).split(":")
    return kind, opts, sched, sopts


def make_method(name: str, space, seed: int, budget: int | None, workers: int, grace: int | None = None,
                rf: int | None = None):
    """(searcher, scheduler) of a method, as a search with these settings would build them (`budget` trials,
    None for a compute budget). Every method's first trial is the space's base config (its points).
    stock and the random methods get Ray's defaults; birdtune's searchers get birdtune's scheduler with the
    space's settings (or `grace` / `rf`)."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search import searcher as searchers
    from search.layout import TAIL_FILL
    from search.scheduler import make_scheduler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    points = [dict(p) for p in space.points]
    # what a user writes: Ray's ASHAScheduler with its defaults (grace 1, reduction 4), max_t the epochs
    ray_asha = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=space.epochs)
    if name in ("random_full", "random_asha"):
        s = OptunaSearch(space=space.define, metric=METRIC, mode=MODE, points_to_evaluate=points,
                         sampler=optuna.samplers.RandomSampler(seed=seed))
        return s, (FIFOScheduler() if name == "random_full" else ray_asha)
    if name == "stock":
        return OptunaSearch(space=space.define, metric=METRIC, mode=MODE, points_to_evaluate=points, seed=seed), ray_asha
    kind, opts, sched, sopts = parse_method(name)
    kw = {k: v if v in TAIL_FILL else float(v) if "." in v else int(v) for k, v in (o.split("=") for o in sopts)}
    from search.layout import grace_period

    grace = kw.pop("grace_period", None) or grace or grace_period(space.grace_period, space.epochs)
    rf = kw.pop("reduction_factor", None) or rf or space.reduction_factor
    s, _ = searchers.make_searcher(kind, space, max_t=space.epochs, seed=seed, study_name=f"replay-{seed}",
                                   db_path=None, concurrency=workers, num_samples=budget,
                                   grace_period=grace, reduction_factor=rf)
    for opt in opts:  # variants for exploring, e.g. mftpe:_min_points=5
        key, value = opt.split("=")
        setattr(s, key, type(getattr(s, key))(value))
    return s, make_scheduler(sched, max_t=space.epochs, grace_period=grace, reduction_factor=rf, num_samples=budget,
                             workers=workers, **kw)


def simulate(method: str, bench_name: str, task: str, budget: int | None, workers: int, seed: int,
             grace: int | None = None, rf: int | None = None, lcbench_dir: str | None = None,
             trace: bool = False, compute: int | None = None) -> dict:
    """One simulated search of `budget` trials, or (`compute`) of compute x epochs trial-epochs; returns its
    pick's full-length quality, normalised regret, trial-epochs and anytime curve (and with `trace`, every
    trial's config and last epoch in launch order, and in `trace_quality` its full-length quality)."""
    from ray.tune.schedulers import TrialScheduler

    from search import internals
    from search.budget import Budget, Meter

    internals.fast_suggestions()  # as make_searcher does, for every method alike (stock's TPE included)
    bench = get_benchmark(bench_name, lcbench_dir)
    space = bench.space()
    best_q, median_q = benchmarks.reference(bench, task)
    scale = max(best_q - median_q, 1e-12)
    np.random.seed(seed)  # ASHA draws its bracket with numpy's global generator
    searcher, scheduler = make_method(method, space, seed, None if compute else budget, workers, grace, rf)
    max_t = space.epochs
    meter = Meter(Budget(epochs=compute * max_t)) if compute else None
    if meter is not None and hasattr(searcher, "use_budget"):
        searcher.use_budget(meter)  # birdtune: the code --epoch-budget runs
    if meter is not None and hasattr(scheduler, "use_budget"):
        scheduler.use_budget(meter)
    events: list = []  # (time, order, trial_id)
    trials: dict[str, dict] = {}
    live: set[str] = set()  # trials running now
    driver, created, order = 0.0, 0, 0
    incumbent = (-math.inf, None)  # observed score, full-length quality
    anytime: list[tuple[int, float]] = []
    suggest_s: list[float] = []
    hits: dict = {}
    epochs_used = 0
    # where the workers' time goes: training, waiting for the driver to suggest a trial, waiting for it to take
    # a result (the next epoch starts when the driver is free); the rest is idle with no trial to start
    clock = dict(busy=0.0, suggest_wait=0.0, result_wait=0.0, end=0.0, last_start=0.0)
    epochs_run: list[tuple[float, float]] = []  # (start, end) of every epoch

    def may_start() -> bool:
        if meter is None:
            return created < budget
        if hasattr(searcher, "use_budget") or meter.stop_all():
            return not meter.stop_all()  # birdtune's searcher decides the rest
        if method == "random_full":  # a full-length trial only while one fits
            running = sum(max_t - trials[tid]["epoch"] for tid in live)
            return meter.epochs + running + max_t <= meter.budget.epochs
        return True  # stock, random_asha: while the budget is not spent

    pending: list[str] = []  # trials suggested and not started yet (promote mode: Ray's PENDING trials)
    finished = [False]  # the searcher said FINISHED: Ray asks it no more

    def launch(now: float, start: bool = True) -> bool:
        nonlocal created, driver, order
        if finished[0] or not may_start():
            return False
        tid = f"t{created:04d}"
        t0 = time.perf_counter()
        config = searcher.suggest(tid)
        dt = time.perf_counter() - t0
        suggest_s.append(dt)
        if config == "FINISHED" and promote:
            finished[0] = True
        if config is None or config == "FINISHED":
            return False
        created += 1
        scores, seconds = benchmarks.curves(bench, task, [config], seed, hits)
        quality = bench.quality(task, config) if hasattr(bench, "quality") else float(scores[0].max())
        driver = max(driver, now) + dt
        clock["suggest_wait"] += driver - now
        clock["last_start"] = driver
        trial = FakeTrial(tid, config)
        scheduler.on_trial_add(None, trial)
        trials[tid] = dict(trial=trial, scores=scores[0], seconds=seconds[0], quality=quality, epoch=0,
                           config=config, done=False, told=False)
        if start:
            run(tid, now)
        else:
            pending.append(tid)
        return True

    promote = getattr(scheduler, "promote", False)  # birdtune's ASHA with a compute budget: paused trials go on
    sim_now = [0.0]  # the simulated clock, for the tail fill's choices
    tail = getattr(scheduler, "tail", None)
    if tail is not None:
        tail.clock = lambda: sim_now[0]

    def run(tid: str, now: float) -> None:  # a new trial starts, or a stopped one goes on from its checkpoint
        nonlocal order
        st = trials[tid]
        st["done"] = False
        live.add(tid)
        # (a simulated restart costs nothing, as a simulated trial start does not)
        heapq.heappush(events, (max(now, driver) + st["seconds"][st["epoch"]], order, tid))
        order += 1

    def fill(now: float) -> None:
        nonlocal order
        if not promote:
            while len(live) < workers and launch(now):
                pass
        else:  # as Ray's controller steps: the searcher is asked for trials while its concurrency limit (the
            # trials it suggested and was not told the end of) allows, then the scheduler's choose_trial_to_run
            # starts a paused trial it promotes before any of them
            while len(pending) + sum(not trials[t]["told"] for t in live) < workers and launch(now, start=False):
                pass
            if finished[0] and not live:
                return  # every trial has ended and the searcher is done: Ray's controller ends the search
            while len(live) < workers:
                tid = scheduler.choose_promotion(lambda t: trials[t]["done"] and t not in live)
                if tid is None and pending:
                    tid = pending.pop(0)
                if tid is not None:
                    run(tid, now)
                else:
                    break
        while tail is not None:  # the search's tail: a free worker continues a stopped trial (search.scheduler)
            tid = tail.choose(len(live))
            if tid is None:
                return
            run(tid, now)

    fill(0.0)
    while events:
        now, _, tid = heapq.heappop(events)
        sim_now[0] = now
        st = trials[tid]
        e = st["epoch"] = st["epoch"] + 1
        value = float(st["scores"][e - 1])
        epochs_used += 1
        clock["busy"] += float(st["seconds"][e - 1])
        clock["end"] = now
        epochs_run.append((now - float(st["seconds"][e - 1]), now))
        result = {"epoch": e, "training_iteration": e, METRIC: value, "trial_id": tid,
                  "time_this_iter_s": float(st["seconds"][e - 1])}
        if meter is not None:
            meter(tid, result)  # (Ray hands the stopper every result first)
        if value > incumbent[0]:
            incumbent = (value, st["quality"])
        anytime.append((epochs_used, (best_q - incumbent[1]) / scale))
        decision = scheduler.on_trial_result(None, st["trial"], result)
        if decision == TrialScheduler.STOP or e >= max_t:
            st["done"] = st["told"] = True
            live.discard(tid)
            searcher.on_trial_complete(tid, result=result)
            scheduler.on_trial_complete(None, st["trial"], result)
        else:
            searcher.on_trial_result(tid, result)
            heapq.heappush(events, (max(now, driver) + st["seconds"][e], order, tid))
            clock["result_wait"] += max(0.0, driver - now)
            order += 1
        if meter is not None and meter.stop_all():  # the budget is spent: the search ends, cutting what runs
            break
        fill(now)
    out = dict(benchmark=bench.name, task=task, method=method, budget=budget if not compute else None,
               compute=compute, workers=workers, seed=seed, quality=incumbent[1],
               regret=float((best_q - incumbent[1]) / scale), epochs=epochs_used, trials=created, anytime=anytime,
               suggest_ms=1000 * float(np.median(suggest_s)) if suggest_s else 0.0,
               clock={k: float(v) for k, v in clock.items()})
    # busy worker-time until the last trial started: the search's steady state, before its tail
    if tail is not None:
        out["clock"].update(continued=tail.continued, continued_epochs=tail.epochs)
    out["clock"]["busy_until_last_start"] = float(sum(max(0.0, min(b, clock["last_start"]) - a) for a, b in epochs_run))
    if compute:
        out["overshoot"] = max(0, epochs_used - compute * max_t)
    if trace:
        out["trace"] = [(tid, st["config"], st["epoch"]) for tid, st in trials.items()]
        out["trace_quality"] = [float(st["quality"]) for st in trials.values()]  # each one's, as the pick's is scored
    return out


def _run(args):
    return simulate(*args)


RHO = 0.8  # the rank correlation at which a table's early scores are said to rank configs as their final ones


def rank_evidence(table, rho: float = RHO) -> tuple[int, list[float]]:
    """The first epoch at which one training run's best score so far ranks the recorded configs as their final
    quality does with Spearman's rho >= `rho` (what a search sees at a rung is one seed's curve), and the
    correlation at every epoch. Information only: no method is given it."""
    from scipy.stats import spearmanr

    best_so_far = np.maximum.accumulate(table.cmap[:, 0, :], axis=1)
    rhos = [float(spearmanr(best_so_far[:, e], table.quality).correlation) for e in range(best_so_far.shape[1])]
    return next((e + 1 for e, r in enumerate(rhos) if r >= rho), len(rhos)), rhos


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    lo, hi = int(math.floor(n * 0.25)), int(math.ceil(n * 0.75))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


def bootstrap_mean(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean."""
    x = np.asarray(x, float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.array([x[rng.integers(len(x), size=len(x))].mean() for _ in range(n)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def wilcoxon_less(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided paired Wilcoxon signed-rank p for 'a is lower than b' (1 where they never differ)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, float) - np.asarray(b, float)
    if not (d != 0).any():
        return 1.0
    return float(wilcoxon(a, b, alternative="less").pvalue)


def mannwhitney_less(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided Mann-Whitney U p for 'a's values are lower than b's' (unpaired: two methods' runs on one task,
    whose seeds are each their own; 1 where all are equal)."""
    from scipy.stats import mannwhitneyu

    if len(a) == 0 or len(b) == 0:
        return float("nan")
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    return float(mannwhitneyu(a, b, alternative="less").pvalue)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(ps) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: ps[i])
    out, running = list(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        out[i] = running
    return out


def cell_of(row: dict) -> tuple:
    """A run's cell: ('trials', N) or ('compute', C), with its workers."""
    compute = row.get("compute")
    if compute is not None and not (isinstance(compute, float) and math.isnan(compute)) and compute:
        return "compute", int(compute), int(row["workers"])
    return "trials", int(row["budget"]), int(row["workers"])


def mean_ranks(df: pd.DataFrame) -> dict[str, float]:
    """Each method's rank (1 = lowest mean regret) on each task, averaged over the tasks all methods ran."""
    per = df.groupby(["task", "method"])["regret"].mean().unstack()
    per = per.dropna()
    return per.rank(axis=1, method="average").mean().to_dict() if not per.empty else {}


def summarize(rows: list[dict], methods: list[str]) -> tuple[list[dict], list[dict]]:
    """(per-task rows, per-cell aggregate rows with task 'all'), the figures the README's tables show. Peers'
    rows (tests/bench/peers/) join as methods of their own."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("anytime", "trace")} for r in rows])
    df["task"] = df["task"].astype(str)
    if "compute" not in df:
        df["compute"] = None
    df["cell"] = [cell_of(r) for r in df.to_dict("records")]
    per_task = []
    for (task, cell, method), g in df.groupby(["task", "cell", "method"], sort=False):
        per_task.append(dict(benchmark=str(g["benchmark"].iloc[0]), task=task, method=method,
                             budget=cell[1] if cell[0] == "trials" else None, compute=cell[1] if cell[0] == "compute" else None,
                             workers=cell[2], seeds=len(g), mean_norm_regret=float(g["regret"].mean()),
                             iqm_regret=iqm(g["regret"]), mean_quality=float(g["quality"].mean()),
                             epochs=float(g["epochs"].mean()), suggest_ms=float(g["suggest_ms"].median())))
    agg = []
    for cell, cdf in df.groupby("cell"):
        key = cdf.set_index(["task", "seed"])
        present = [m for m in dict.fromkeys(list(methods) + sorted(cdf["method"].unique())) if (cdf["method"] == m).any()]
        ranks = mean_ranks(cdf)
        ref = {m: key[key.method == m].sort_index() for m in ("stock", "random_full")}
        task_means = cdf.groupby(["method", "task"])["regret"].mean()
        for method in present:
            g = key[key.method == method].sort_index()
            lo_ci, hi_ci = bootstrap_mean(g["regret"].to_numpy())
            row = dict(benchmark=str(g["benchmark"].iloc[0]), task="all", method=method,
                       budget=cell[1] if cell[0] == "trials" else None, compute=cell[1] if cell[0] == "compute" else None,
                       workers=cell[2], tasks=int(g.index.get_level_values(0).nunique()),
                       seeds=int(g.index.get_level_values(1).nunique()), mean_norm_regret=float(g["regret"].mean()),
                       ci_low=lo_ci, ci_high=hi_ci, iqm_regret=iqm(g["regret"]), mean_rank=ranks.get(method, float("nan")),
                       suggest_ms=float(g["suggest_ms"].median()) if "suggest_ms" in g else float("nan"),
                       epochs=float(g["epochs"].mean()))
            for other, stock_like in (("stock", True), ("random_full", False)):
                o = ref[other]
                both = g.index.intersection(o.index)
                if method == other or len(both) == 0:
                    p, diff, lo, hi, wins = float("nan"), float("nan"), float("nan"), float("nan"), None
                else:
                    d = (g.loc[both, "regret"] - o.loc[both, "regret"]).to_numpy()
                    p = wilcoxon_less(g.loc[both, "regret"].to_numpy(), o.loc[both, "regret"].to_numpy())
                    diff, (lo, hi) = float(d.mean()), bootstrap_mean(d)
                    per = pd.Series(d, index=both).groupby(level=0).mean()
                    wins = int((per < 0).sum())
                if stock_like:
                    row.update(diff_vs_stock=diff, diff_ci_low=lo, diff_ci_high=hi, p_vs_stock=p, wins_vs_stock=wins)
                else:
                    row.update(diff_vs_random_full=diff, p_vs_random_full=p)
            # against every other method of the cell: over (task, seed) for the two baselines run here, over the
            # tasks' mean regrets for the rest (a peer's seeds are its own), over the runs on a one-task benchmark
            row["p_vs"] = {}
            for other in present:
                if other == method:
                    continue
                if other in ref and other in ("stock", "random_full"):
                    row["p_vs"][other] = row["p_vs_stock"] if other == "stock" else row["p_vs_random_full"]
                    continue
                a, b = task_means.get(method), task_means.get(other)
                common = a.index.intersection(b.index) if a is not None and b is not None else []
                if len(common) >= 2:
                    row["p_vs"][other] = wilcoxon_less(a.loc[common].to_numpy(), b.loc[common].to_numpy())
                elif len(common) == 1:  # one task (birdtune's own tables): the two methods' runs, unpaired
                    on = cdf[cdf["task"] == common[0]]
                    row["p_vs"][other] = mannwhitney_less(on.loc[on.method == method, "regret"].to_numpy(),
                                                          on.loc[on.method == other, "regret"].to_numpy())
                else:
                    row["p_vs"][other] = float("nan")
            full = ref["random_full"]
            if not full.empty:
                q = g.groupby(level=0)["quality"].mean() / full.groupby(level=0)["quality"].mean()
                row["quality_vs_random_full"] = float(q.mean())
                row["epochs_fraction"] = float(g["epochs"].sum() / full.loc[g.index.intersection(full.index), "epochs"].sum())
            else:
                row["quality_vs_random_full"] = row["epochs_fraction"] = float("nan")
            agg.append(row)
    for method in dict.fromkeys(r["method"] for r in agg):  # Holm across the run's cells, per comparison
        mine = [r for r in agg if r["method"] == method]
        for p_key in ("p_vs_stock", "p_vs_random_full"):
            for r, adj in zip(mine, holm([r[p_key] for r in mine])):
                r[p_key + "_holm"] = adj
        # against the others: Holm across the others and the cells, together
        flat = [(r, other, p) for r in mine for other, p in r["p_vs"].items()]
        for (r, other, _), adj in zip(flat, holm([p for _, _, p in flat])):
            r.setdefault("p_vs_holm", {})[other] = adj
        for r in mine:
            r.setdefault("p_vs_holm", {})
    return per_task, agg


def anytime_plot(rows: list[dict], methods: list[str], cell: tuple, path: Path, title: str) -> None:
    """Mean normalised regret (over tasks and seeds) against trial-epochs used, one line per method, in one
    cell (cell_of's tuple)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    n = 0
    for k, method in enumerate(methods):
        runs = [r for r in rows if r["method"] == method and cell_of(r) == cell and r.get("anytime")]
        if not runs:
            continue
        n = max(n, len(runs))
        grid = np.arange(1, max(r["epochs"] for r in runs) + 1)
        curves = []
        for r in runs:
            e, reg = (np.asarray(v, float) for v in zip(*r["anytime"]))
            i = np.searchsorted(e, grid, side="right") - 1  # the incumbent after the last epoch <= x
            curves.append(np.where(i >= 0, reg[np.clip(i, 0, None)], reg[0]))
        ax.plot(grid, np.mean(curves, axis=0), label=method, lw=2 if method == "birdtune" else 1,
                ls="-" if k < 10 else "--")  # (the colour cycle has 10 colours)
    kind, size, workers = cell
    what = f"compute of {size} full-length trials" if kind == "compute" else f"{size} trials"
    ax.set(xlabel="trial-epochs used", ylabel="mean normalised regret", yscale="log",
           title=f"{title}: {what}, {workers} workers, {n} runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SUGGEST_MS_TARGET = 50  # the driver suggests between trials: a slower searcher idles the cluster


def suggestion_time(kind: str, space, history: int, seed: int = 0, repeats: int = 5) -> float:
    """Milliseconds per suggestion of searcher `kind` with `history` finished trials behind it."""
    import optuna

    from search import searcher as searchers

    rng = np.random.default_rng(seed)
    s, _ = searchers.make_searcher(kind, space, max_t=space.epochs, seed=seed, study_name="timing", db_path=None,
                                   concurrency=8, num_samples=history + repeats, grace_period=space.grace_period,
                                   reduction_factor=space.reduction_factor)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for i in range(history):
        tid = f"h{i}"
        s.suggest(tid)
        last = int(rng.integers(1, space.epochs + 1))
        for e in range(1, last + 1):
            s.on_trial_result(tid, {"epoch": e, METRIC: float(rng.uniform(0.5, 0.9))})
        s.on_trial_complete(tid, result={"epoch": last, METRIC: float(rng.uniform(0.5, 0.9))})
    t0 = time.perf_counter()
    for i in range(repeats):
        s.suggest(f"new{i}")
    return 1000 * (time.perf_counter() - t0) / repeats


UTILISATION_TARGET = 0.95
METHODS_DEFAULT = "random_full,stock,birdtune"


def utilisation(bench_name: str, task: str, trials: int, workers: int, seed: int = 0,
                lcbench_dir: str | None = None, method: str = "birdtune") -> dict:
    """Worker utilisation of birdtune's default search of `trials` trials on `workers` simulated workers: busy
    worker-time over workers x wall, and where the idle time went (fractions of workers x wall): waiting for
    the driver's suggestion, waiting for the driver to take a result, and no trial to start (the last trials
    finishing while others have none left, or the searcher holding a trial back)."""
    out = simulate(method, bench_name, task, trials, workers, seed, lcbench_dir=lcbench_dir)
    c = out["clock"]
    total = workers * c["end"]
    share = {k: c[k] / total for k in ("busy", "suggest_wait", "result_wait")}
    steady = c["busy_until_last_start"] / (workers * c["last_start"]) if c["last_start"] else 1.0
    return dict(task=task, trials=out["trials"], epochs=out["epochs"], workers=workers, wall_s=c["end"],
                utilisation=share["busy"],
                suggest_wait=share["suggest_wait"], result_wait=share["result_wait"],
                no_trial=1 - sum(share.values()), suggest_ms=out["suggest_ms"], last_start_s=c["last_start"],
                utilisation_until_last_start=steady, regret=out["regret"],
                continued=out["clock"].get("continued", 0), continued_epochs=out["clock"].get("continued_epochs", 0))


def fmt_p(p: float) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def cell_label(r: dict) -> str:
    return f"compute {r['compute']}" if r.get("compute") else f"{r['budget']} trials"


def print_table(agg: list[dict]) -> None:
    print(f"{'cell':>12} {'W':>3} {'method':<22} {'regret [95% CI]':>23} {'rank':>5} {'diff vs stock [95% CI]':>26} "
          f"{'p stock Holm':>12} {'p full Holm':>11} {'wins':>6} {'q/full':>7} {'epochs':>8} {'e/full':>6} {'ms':>6}")
    for r in agg:
        cell = cell_label(r)
        diff = "-" if math.isnan(r["diff_vs_stock"]) else \
            f"{r['diff_vs_stock']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]"
        wins = "-" if r["wins_vs_stock"] is None else f"{r['wins_vs_stock']}/{r['tasks']}"
        regret = f"{r['mean_norm_regret']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        print(f"{cell:>12} {r['workers']:>3} {r['method']:<22} {regret:>23} {r['mean_rank']:>5.2f} {diff:>26} "
              f"{fmt_p(r['p_vs_stock_holm']):>12} {fmt_p(r['p_vs_random_full_holm']):>11} "
              f"{wins:>6} {r['quality_vs_random_full']:>7.4f} {r['epochs']:>8.1f} {r['epochs_fraction']:>6.2f} "
              f"{r['suggest_ms']:>6.1f}")


def print_peer_tests(agg: list[dict], mine: list[str], peers: set[str]) -> None:
    """Per cell, birdtune's Holm-corrected p against each peer (one-sided: birdtune lower; --json has every
    method's against every other)."""
    for r in agg:
        if r["method"] not in mine:
            continue
        cell = cell_label(r)
        others = [o for o in r["p_vs_holm"] if o in peers]
        if others:
            print(f"{cell:>12} {r['workers']:>3} {r['method']} vs peers (Holm p): "
                  + ", ".join(f"{o} {fmt_p(r['p_vs_holm'][o])}" for o in others))


def print_utilisation(name: str, tasks: list[str], spec: str, seed: int, lcdir: str | None, out: str | None,
                      method: str = "birdtune") -> int:
    """--utilisation TRIALSxWORKERS: one search per task, its utilisation and idle time printed (and written)."""
    trials, workers = (int(x) for x in spec.lower().split("x"))
    rows = []
    for task in tasks:
        t0 = time.time()
        r = utilisation(name, task, trials, workers, seed, lcdir, method)
        rows.append(r)
        print(f"task {task}: {r['trials']} trials on {workers} workers, utilisation {r['utilisation']:.1%} "
              f"(idle: waiting for a suggestion {r['suggest_wait']:.1%}, for the driver to take a result "
              f"{r['result_wait']:.1%}, no trial to start {r['no_trial']:.1%}); until the last trial started "
              f"({r['last_start_s']:.0f} of {r['wall_s']:.0f} s) {r['utilisation_until_last_start']:.1%}; "
              f"{r['suggest_ms']:.1f} ms per suggestion (median); the tail fill continued {r['continued']} stopped "
              f"trials for {r['continued_epochs']} epochs (of {r['epochs']}); regret {r['regret']:.3f}; "
              f"replayed in {time.time() - t0:.0f} s", flush=True)
    mean = float(np.mean([r["utilisation"] for r in rows]))
    steady = float(np.mean([r["utilisation_until_last_start"] for r in rows]))
    print(f"mean utilisation {mean:.1%} over {len(rows)} task(s) (target >= {UTILISATION_TARGET:.0%}: "
          f"{'met' if mean >= UTILISATION_TARGET else 'MISSED'}); until the last trial started {steady:.1%}")
    if out:
        Path(out).write_text(json.dumps(dict(benchmark=name, trials=trials, workers=workers, runs=rows), indent=1))
    return 0


def read_peers(path: str, bench: str, tasks: list[str], cells: list[tuple]) -> list[dict]:
    """The peers' recorded runs (tests/bench/peers/) of this benchmark, tasks and cells, as rows (their seeds
    are their own: peers are compared over the tasks' mean regrets, or over the runs where there is one task). A peer's cell recorded on only some of the
    tasks is left out, and said so: its mean would be over other tasks than the rest's."""
    data = json.loads(Path(path).read_text())
    if data.get("benchmark") not in (None, bench):
        raise ValueError(f"--peers {path} holds {data.get('benchmark')}, not {bench}")
    by: dict[tuple, list[dict]] = {}
    for r in data["runs"]:
        if str(r["task"]) in tasks and cell_of(r) in cells:
            by.setdefault((r["method"], cell_of(r)), []).append(
                {**r, "task": str(r["task"]), "benchmark": bench, "suggest_ms": r.get("suggest_ms", float("nan"))})
    out = []
    for (method, (_, size, workers)), runs in by.items():
        have = len({r["task"] for r in runs})
        if have < len(set(tasks)):
            print(f"peers: {method} left out at compute {size} x {workers}: recorded on {have} of the {len(set(tasks))} "
                  "tasks", file=sys.stderr)
            continue
        out += runs
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", help="lcbench, birdtune-default, birdtune-tiny or FILE.py:NAME (default birdtune-tiny)")
    p.add_argument("--size", choices=["tiny", "default"], help="alias: --size X is --benchmark birdtune-X")
    p.add_argument("--tasks", help="dev (the default: the benchmark's development tasks), held (the others), all, or task ids, comma-separated")
    p.add_argument("--lcbench-dir", help="the LCBench surrogate's folder (default ../shared/benchmarks/lcbench)")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--budgets", default=None, help="trial-count cells, e.g. 16,32 (default 16,32 without --compute)")
    p.add_argument("--compute", default=None,
                   help="equal-compute cells: budgets of that many full-length trials' epochs, e.g. 4,8,16,32")
    p.add_argument("--workers", default="2,4")
    p.add_argument("--methods", default=METHODS_DEFAULT,
                   help="random_full, random_asha, stock, birdtune, or searcher[:opt=v][@scheduler[:opt=v]]")
    p.add_argument("--peers", help="the peers' recorded runs (tests/bench/data/peers-<benchmark>.json) to add")
    p.add_argument("--grace", type=int, help="grace period for birdtune's scheduler (default: the space's)")
    p.add_argument("--rf", type=int, help="reduction factor for birdtune's scheduler (default: the space's)")
    p.add_argument("--json", help="write the tables (and every cell's figures) here")
    p.add_argument("--plots", help="folder for the anytime plots (PNG)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timing", action="store_true", help="also time the default searcher at 64/256/1024 trials")
    p.add_argument("--utilisation", metavar="TRIALSxWORKERS",
                   help="only this: worker utilisation of birdtune's search of that many trials, e.g. 1024x256, "
                        "on each task")
    args = p.parse_args()
    if args.benchmark and args.size and args.benchmark != f"birdtune-{args.size}":
        p.error("--size is an alias of --benchmark birdtune-SIZE: give one of them")
    name = args.benchmark or f"birdtune-{args.size or 'tiny'}"
    lcdir = str(Path(args.lcbench_dir).resolve()) if args.lcbench_dir else None
    try:
        bench = get_benchmark(name, lcdir)
        tasks = benchmarks.select_tasks(bench, args.tasks)
        space = bench.space()
        for t in tasks:  # each task's reference once, in this process, before the pool reads it
            benchmarks.reference(bench, t)
    except Exception as e:  # a missing surrogate, a bad task id or benchmark file: one line
        print(f"replay: {e}", file=sys.stderr)
        return 2
    if args.utilisation:
        methods = args.methods.split(",")
        if len(methods) > 1 and args.methods != METHODS_DEFAULT:
            print("replay: --utilisation replays one method: give one to --methods", file=sys.stderr)
            return 2
        return print_utilisation(name, tasks, args.utilisation, args.first_seed, lcdir, args.json,
                                 methods[0] if len(methods) == 1 else "birdtune")
    from search.layout import grace_period

    rhos = []
    if hasattr(bench, "table"):
        evidence, rhos = rank_evidence(bench.table)
        print("rank correlation of one run's best-so-far cmAP with final quality, by epoch: "
              + " ".join(f"{e + 1}:{r:.2f}" for e, r in enumerate(rhos)) + f"  (first >= {RHO}: epoch {evidence})")
    methods = args.methods.split(",")
    budgets = [int(b) for b in (args.budgets or ("" if args.compute else "16,32")).split(",") if b]
    computes = [int(c) for c in (args.compute or "").split(",") if c]
    workers = [int(w) for w in args.workers.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(m, name, t, b, w, s, args.grace, args.rf, lcdir) for b in budgets for w in workers for t in tasks
            for s in seeds for m in methods]
    jobs += [(m, name, t, None, w, s, args.grace, args.rf, lcdir, False, c) for c in computes for w in workers
             for t in tasks for s in seeds for m in methods]
    cells = [("trials", b, w) for b in budgets for w in workers] + [("compute", c, w) for c in computes for w in workers]
    t0 = time.time()
    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.processes) as pool:
        rows = list(tqdm(pool.imap_unordered(_run, jobs, chunksize=8), total=len(jobs), desc="replays",
                         mininterval=5 if sys.stderr.isatty() else 60))  # off a terminal: a line a minute
    wall = time.time() - t0
    peers = read_peers(args.peers, bench.name, tasks, cells) if args.peers else []
    per_task, agg = summarize(rows + peers, methods)
    print(f"{name}: {len(tasks)} task(s), {len(seeds)} paired seeds (from {args.first_seed}), max_t {space.epochs}; "
          f"stock and random_asha: Ray's ASHA defaults (grace 1, reduction 4); birdtune's scheduler: grace "
          f"{args.grace or grace_period(space.grace_period, space.epochs)}, reduction {args.rf or space.reduction_factor}; "
          f"{len(jobs)} replays in {wall:.0f} s on {args.processes} process(es)"
          + (f"; {len(peers)} peer runs from {args.peers}" if peers else ""))
    print("regret: (best - pick) / (best - median), pick scored at full length; diff and p vs stock / random_full: "
          "paired over (task, seed); Holm over this run's cells")
    print_table(agg)
    if peers:
        print_peer_tests(agg, [m for m in methods if m.startswith("birdtune")], {r["method"] for r in peers})
    timing = {}
    if args.timing:
        from search import searcher as searchers

        for n in (64, 256, 1024):
            timing[n] = suggestion_time(searchers.DEFAULT, space, n)
            print(f"default searcher ({searchers.DEFAULT}): {timing[n]:.1f} ms per suggestion with {n} finished trials"
                  + (f" (target <= {SUGGEST_MS_TARGET} ms: {'met' if timing[n] <= SUGGEST_MS_TARGET else 'MISSED'})"
                     if n == 1024 else ""))
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        shown = list(dict.fromkeys(methods + [r["method"] for r in peers]))
        for cell in cells:
            kind, size, w = cell
            anytime_plot(rows + peers, shown, cell, Path(args.plots) / f"anytime-{bench.name}-{kind}{size}x{w}.png",
                         bench.name)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            benchmark=bench.name, tasks=tasks, seeds=[seeds.start, seeds.stop - 1], methods=methods,
            rank_correlation_by_epoch=rhos, runs=per_task + agg, wall_s=wall, suggestion_ms=timing), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
