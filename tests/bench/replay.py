"""Search quality on learning curves nobody has to train again: many simulated searches, paired by seed, per
benchmark task, method, budget and worker count, as Syne Tune's simulator backend does it.

    python tests/bench/replay.py [--benchmark birdtune-default|birdtune-tiny|lcbench] [--tasks ID,...]
                                 [--lcbench-dir PATH] [--seeds 100] [--first-seed 0] [--budgets 16,32]
                                 [--workers 2,4] [--methods random_full,stock,birdtune] [--json PATH]
                                 [--plots DIR] [--processes 2] [--timing]

Benchmarks. `birdtune-default` / `birdtune-tiny` (`--size default|tiny` is an alias): this project's tables,
tests/bench/data/finetune-<size>.parquet (tests/bench/record.py), configs drawn uniformly from the finetune
space, each trained for the demo's 8 epochs with 2 training seeds; a config the table lacks is answered by
its nearest recorded neighbour in the space scaled to [0, 1] (log scale where the space samples on one),
with one of its 2 runs drawn per (replay seed, config), so every method meets the same noise (a config met
again answers with its other run). `lcbench`: YAHPO Gym's LCBench surrogate (tests/bench/lcbench.py), 52
epochs of val_accuracy, the surrogate's time per epoch on the clock; without --tasks the README's 17
development tasks.

A simulated search drives the real objects through Ray Tune's public interfaces, without starting Ray: a
Searcher's suggest / on_trial_result / on_trial_complete and a TrialScheduler's on_trial_add /
on_trial_result / on_trial_complete, in the order Ray's TuneController calls them (tests/test_replay.py
checks it against a real Tuner). W workers run trials on a simulated clock; a stopped trial's later epochs
never happen; the searcher's own time per suggestion (measured) delays the trial it starts.

A config's quality is its best epoch at full length (on a table, the mean over its 2 runs). A search's pick
is its trial with the best observed score (what birdtune exports), scored at full length; its regret is
(best - pick) / (best - median), best and median over the table, or over a fixed random sample of 10,000
configs of the LCBench task, so tasks can be pooled.

Methods, all starting from the space's base config (the notebook's; LCBench's defaults): random_full (random
search, every trial at full length), random_asha (random + Ray's ASHA with its defaults), stock
(OptunaSearch with Optuna's defaults + Ray's ASHAScheduler with its defaults: grace 1, reduction 4), birdtune
(the default searcher with the default scheduler and the settings a search derives), and variants
`searcher[:attr=value][@scheduler[:grace_period=N:reduction_factor=N]]`. The random methods draw through
Optuna's RandomSampler, so that under one seed every Optuna-based method starts from the same configs.
Per cell: paired one-sided Wilcoxon over (task, seed) against stock and random_full, Holm's correction
across the run's cells, a bootstrap interval of the paired difference, per-task wins. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
METRIC, MODE = "cmap", "max"


@dataclasses.dataclass
class Table:
    """The recorded curves, indexed for nearest-neighbour lookups."""

    space: object
    params: list[str]
    configs: pd.DataFrame  # config_id -> param values
    cmap: np.ndarray  # (configs, seeds, epochs)
    seconds: np.ndarray  # (configs, seeds, epochs)
    quality: np.ndarray  # (configs,) mean over seeds of the best epoch
    tree: object

    @classmethod
    def load(cls, space_name: str, size: str) -> "Table":
        import spaces
        from scipy.spatial import cKDTree

        df = pd.read_parquet(DATA / f"{space_name}-{size}.parquet")
        space = spaces.get(space_name)
        dists = space.distributions()
        params = list(dists)
        ids = sorted(df["config_id"].unique())
        seeds = sorted(df["seed"].unique())
        epochs = int(df["epoch"].max())
        full = df.set_index(["config_id", "seed", "epoch"]).sort_index()
        cmap = np.full((len(ids), len(seeds), epochs), np.nan)
        secs = np.full_like(cmap, np.nan)
        pos = {c: i for i, c in enumerate(ids)}
        for (c, s, e), row in full.iterrows():
            cmap[pos[c], seeds.index(s), e - 1] = row["cmap"]
            secs[pos[c], seeds.index(s), e - 1] = row["seconds"]
        # a diverged run stopped early: its missing epochs score 0 and take no time
        cmap, secs = np.nan_to_num(cmap, nan=0.0), np.nan_to_num(secs, nan=0.0)
        configs = df.drop_duplicates("config_id").set_index("config_id").loc[ids, params].reset_index(drop=True)
        table = cls(space, params, configs, cmap, secs, cmap.max(axis=2).mean(axis=1), None)
        table.tree = cKDTree(table.scaled(configs.to_dict("records")))
        return table

    def scaled(self, configs: list[dict]) -> np.ndarray:
        dists = self.space.distributions()
        out = np.zeros((len(configs), len(self.params)))
        for j, p in enumerate(self.params):
            d = dists[p]
            x = np.array([float(c[p]) for c in configs])
            lo, hi = float(d["low"]), float(d["high"])
            if d["log"]:
                x, lo, hi = np.log(x), math.log(lo), math.log(hi)
            out[:, j] = (x - lo) / (hi - lo)
        return out

    def nearest(self, config: dict) -> int:
        return int(self.tree.query(self.scaled([config])[0])[1])


class TableBenchmark:
    """One of birdtune's recorded tables as a benchmark of one task ("table"): a config is answered by its
    nearest recorded config, with one of its training runs (see the module's docstring)."""

    def __init__(self, size: str):
        self.name = f"birdtune-{size}"
        self.table = Table.load("finetune", size)
        self.space = self.table.space.on_demo()
        self.tasks = ["table"]
        self.epochs = self.space.epochs

    def reference(self, task: str) -> tuple[float, float]:
        return float(self.table.quality.max()), float(np.median(self.table.quality))

    def curve(self, task: str, config: dict, seed: int, hits: dict) -> tuple[np.ndarray, np.ndarray, float]:
        t = self.table
        row = t.nearest(config)
        # the noise draw: which recorded training seed answers, the same for every method under this seed;
        # a config hit again gets the other seed (a rerun near it is a new training run, not a copy)
        base = int(np.random.default_rng([seed, row]).integers(t.cmap.shape[1]))
        draw = (base + hits.get(row, 0)) % t.cmap.shape[1]
        hits[row] = hits.get(row, 0) + 1
        return t.cmap[row, draw], t.seconds[row, draw], float(t.quality[row])


class LCBenchmark:
    """LCBench through YAHPO Gym's surrogate (tests/bench/lcbench.py): deterministic curves, val_accuracy in %,
    the surrogate's time per epoch on the clock; a config's quality is its best epoch at full length."""

    def __init__(self, path: str | None):
        from lcbench import Surrogate

        self.name = "lcbench"
        self.surrogate = Surrogate(path)
        self.space = self.surrogate.space()
        self.tasks = []
        self.epochs = self.space.epochs

    def reference(self, task: str) -> tuple[float, float]:
        return self.surrogate.reference(task)

    def curve(self, task: str, config: dict, seed: int, hits: dict) -> tuple[np.ndarray, np.ndarray, float]:
        acc, secs = self.surrogate.curves(task, [config])
        return acc[0], secs[0], float(acc[0].max())


_BENCH: dict[tuple, object] = {}


def get_benchmark(name: str, lcbench_dir: str | None = None):
    """The benchmark by name, built once per process."""
    key = (name, lcbench_dir)
    if key not in _BENCH:
        _BENCH[key] = LCBenchmark(lcbench_dir) if name == "lcbench" else TableBenchmark(name.split("-", 1)[1])
    return _BENCH[key]


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


def make_method(name: str, space, seed: int, budget: int, workers: int, grace: int | None = None,
                rf: int | None = None):
    """(searcher, scheduler) of a method, as a search with these settings would build them. Every method's
    first trial is the space's base config (its points). stock and the random methods get Ray's defaults;
    birdtune's searchers get birdtune's scheduler with the space's settings (or `grace` / `rf`)."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search import searcher as searchers

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
    kw = {k: float(v) if "." in v else int(v) for k, v in (o.split("=") for o in sopts)}
    from search.layout import grace_period

    grace = kw.pop("grace_period", None) or grace or grace_period(space.grace_period, space.epochs)
    rf = kw.pop("reduction_factor", None) or rf or space.reduction_factor
    s, _ = searchers.make_searcher(kind, space, max_t=space.epochs, seed=seed, study_name=f"replay-{seed}",
                                   db_path=None, concurrency=workers, num_samples=budget,
                                   grace_period=grace, reduction_factor=rf)
    for opt in opts:  # variants for exploring, e.g. mftpe:_min_points=5
        key, value = opt.split("=")
        setattr(s, key, type(getattr(s, key))(value))
    return s, searchers.make_scheduler(sched, max_t=space.epochs, grace_period=grace, reduction_factor=rf,
                                       num_samples=budget, **kw)


def simulate(method: str, bench_name: str, task: str, budget: int, workers: int, seed: int,
             grace: int | None = None, rf: int | None = None, lcbench_dir: str | None = None,
             trace: bool = False) -> dict:
    """One simulated search; returns its pick's full-length quality, normalised regret, trial-epochs and
    anytime curve (and with `trace`, every trial's config and last epoch in launch order)."""
    from ray.tune.schedulers import TrialScheduler

    bench = get_benchmark(bench_name, lcbench_dir)
    space = bench.space
    best_q, median_q = bench.reference(task)
    scale = max(best_q - median_q, 1e-12)
    np.random.seed(seed)  # ASHA draws its bracket with numpy's global generator
    searcher, scheduler = make_method(method, space, seed, budget, workers, grace, rf)
    max_t = space.epochs
    events: list = []  # (time, order, trial_id)
    trials: dict[str, dict] = {}
    driver, created, order, epochs_used = 0.0, 0, 0, 0
    incumbent = (-math.inf, None)  # observed score, full-length quality
    anytime: list[tuple[int, float]] = []
    suggest_s: list[float] = []
    hits: dict = {}

    def launch(now: float) -> bool:
        nonlocal created, driver, order
        if created >= budget:
            return False
        tid = f"t{created:04d}"
        t0 = time.perf_counter()
        config = searcher.suggest(tid)
        dt = time.perf_counter() - t0
        suggest_s.append(dt)
        if config is None or config == "FINISHED":
            return False
        created += 1
        scores, seconds, quality = bench.curve(task, config, seed, hits)
        driver = max(driver, now) + dt
        trial = FakeTrial(tid, config)
        scheduler.on_trial_add(None, trial)
        trials[tid] = dict(trial=trial, scores=scores, seconds=seconds, quality=quality, epoch=0, config=config)
        heapq.heappush(events, (driver + seconds[0], order, tid))
        order += 1
        return True

    for _ in range(workers):
        if not launch(0.0):
            break
    while events:
        now, _, tid = heapq.heappop(events)
        st = trials[tid]
        e = st["epoch"] = st["epoch"] + 1
        value = float(st["scores"][e - 1])
        epochs_used += 1
        result = {"epoch": e, "training_iteration": e, METRIC: value, "trial_id": tid}
        if value > incumbent[0]:
            incumbent = (value, st["quality"])
        anytime.append((epochs_used, (best_q - incumbent[1]) / scale))
        decision = scheduler.on_trial_result(None, st["trial"], result)
        if decision == TrialScheduler.STOP or e >= max_t:
            searcher.on_trial_complete(tid, result=result)
            scheduler.on_trial_complete(None, st["trial"], result)
            launch(now)
        else:
            searcher.on_trial_result(tid, result)
            heapq.heappush(events, (max(now, driver) + st["seconds"][e], order, tid))
            order += 1
    out = dict(benchmark=bench_name, task=task, method=method, budget=budget, workers=workers, seed=seed,
               quality=incumbent[1], regret=float((best_q - incumbent[1]) / scale), epochs=epochs_used,
               trials=created, anytime=anytime, suggest_ms=1000 * float(np.median(suggest_s)) if suggest_s else 0.0)
    if trace:
        out["trace"] = [(tid, st["config"], st["epoch"]) for tid, st in trials.items()]
    return out


def _run(args):
    return simulate(*args)


RHO = 0.8  # the rank correlation at which a table's early scores are said to rank configs as their final ones


def rank_evidence(table: Table, rho: float = RHO) -> tuple[int, list[float]]:
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


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    idx = [i for i, p in enumerate(ps) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: ps[i])
    out, running = list(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * ps[i]))
        out[i] = running
    return out


def summarize(rows: list[dict], methods: list[str]) -> tuple[list[dict], list[dict]]:
    """(per-task rows, per-cell aggregate rows with task 'all'), the figures the issue asks for."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("anytime", "trace")} for r in rows])
    df["task"] = df["task"].astype(str)
    per_task = []
    for (task, budget, workers, method), g in df.groupby(["task", "budget", "workers", "method"], sort=False):
        per_task.append(dict(benchmark=str(g["benchmark"].iloc[0]), task=task, method=method, budget=int(budget),
                             workers=int(workers), seeds=len(g), mean_norm_regret=float(g["regret"].mean()),
                             iqm_regret=iqm(g["regret"]), mean_quality=float(g["quality"].mean()),
                             epochs=float(g["epochs"].mean()), suggest_ms=float(g["suggest_ms"].median())))
    agg = []
    for (budget, workers), cell in df.groupby(["budget", "workers"]):
        key = cell.set_index(["task", "seed"])
        ref = {m: key[key.method == m].sort_index() for m in ("stock", "random_full")}
        for method in methods:
            g = key[key.method == method].sort_index()
            if g.empty:
                continue
            row = dict(benchmark=str(g["benchmark"].iloc[0]), task="all", method=method, budget=int(budget),
                       workers=int(workers), tasks=int(g.index.get_level_values(0).nunique()),
                       seeds=int(g.index.get_level_values(1).nunique()), mean_norm_regret=float(g["regret"].mean()),
                       iqm_regret=iqm(g["regret"]), suggest_ms=float(g["suggest_ms"].median()))
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
            full = ref["random_full"]
            if not full.empty:
                q = g.groupby(level=0)["quality"].mean() / full.groupby(level=0)["quality"].mean()
                row["quality_vs_random_full"] = float(q.mean())
                row["epochs_fraction"] = float(g["epochs"].sum() / full.loc[g.index.intersection(full.index), "epochs"].sum())
            else:
                row["quality_vs_random_full"] = row["epochs_fraction"] = float("nan")
            agg.append(row)
    for method in methods:  # Holm's correction across the cells of this run, per method and comparison
        mine = [r for r in agg if r["method"] == method]
        for p_key in ("p_vs_stock", "p_vs_random_full"):
            for r, adj in zip(mine, holm([r[p_key] for r in mine])):
                r[p_key + "_holm"] = adj
    return per_task, agg


def anytime_plot(rows: list[dict], methods: list[str], budget: int, workers: int, path: Path, title: str) -> None:
    """Mean normalised regret (over tasks and seeds) against trial-epochs used, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    n = 0
    for method in methods:
        runs = [r for r in rows if r["method"] == method and r["budget"] == budget and r["workers"] == workers]
        if not runs:
            continue
        n = len(runs)
        grid = np.arange(1, max(r["epochs"] for r in runs) + 1)
        curves = []
        for r in runs:
            e, reg = (np.asarray(v, float) for v in zip(*r["anytime"]))
            i = np.searchsorted(e, grid, side="right") - 1  # the incumbent after the last epoch <= x
            curves.append(np.where(i >= 0, reg[np.clip(i, 0, None)], reg[0]))
        ax.plot(grid, np.mean(curves, axis=0), label=method)
    ax.set(xlabel="trial-epochs used", ylabel="mean normalised regret", yscale="log",
           title=f"{title}: {budget} trials, {workers} workers, {n} runs")
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


def fmt_p(p: float) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def print_table(agg: list[dict]) -> None:
    print(f"{'budget':>6} {'W':>3} {'method':<18} {'regret':>7} {'diff vs stock [95% CI]':>26} {'p stock':>8} "
          f"{'Holm':>7} {'p full Holm':>11} {'wins':>6} {'q/full':>7} {'epochs':>7} {'ms':>6}")
    for r in agg:
        diff = "-" if math.isnan(r["diff_vs_stock"]) else \
            f"{r['diff_vs_stock']:+.3f} [{r['diff_ci_low']:+.3f}, {r['diff_ci_high']:+.3f}]"
        wins = "-" if r["wins_vs_stock"] is None else f"{r['wins_vs_stock']}/{r['tasks']}"
        print(f"{r['budget']:>6} {r['workers']:>3} {r['method']:<18} {r['mean_norm_regret']:>7.3f} {diff:>26} "
              f"{fmt_p(r['p_vs_stock']):>8} {fmt_p(r['p_vs_stock_holm']):>7} {fmt_p(r['p_vs_random_full_holm']):>11} "
              f"{wins:>6} {r['quality_vs_random_full']:>7.4f} {r['epochs_fraction']:>7.2f} {r['suggest_ms']:>6.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmark", choices=["birdtune-default", "birdtune-tiny", "lcbench"],
                   help="what to replay (default birdtune-tiny)")
    p.add_argument("--size", choices=["tiny", "default"], help="alias: --size X is --benchmark birdtune-X")
    p.add_argument("--tasks", help="LCBench task ids, comma-separated (default: the README's 17 development tasks)")
    p.add_argument("--lcbench-dir", help="the LCBench surrogate's folder (default ../shared/benchmarks/lcbench)")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--budgets", default="16,32")
    p.add_argument("--workers", default="2,4")
    p.add_argument("--methods", default="random_full,stock,birdtune",
                   help="random_full, random_asha, stock, birdtune, or searcher[:opt=v][@scheduler[:opt=v]]")
    p.add_argument("--grace", type=int, help="grace period for birdtune's scheduler (default: the space's)")
    p.add_argument("--rf", type=int, help="reduction factor for birdtune's scheduler (default: the space's)")
    p.add_argument("--json", help="write the tables (and every cell's figures) here")
    p.add_argument("--plots", help="folder for the anytime plots (PNG)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timing", action="store_true", help="also time the default searcher at 64/256/1024 trials")
    args = p.parse_args()
    if args.benchmark and args.size and args.benchmark != f"birdtune-{args.size}":
        p.error("--size is an alias of --benchmark birdtune-SIZE: give one of them")
    name = args.benchmark or f"birdtune-{args.size or 'tiny'}"
    lcdir = str(Path(args.lcbench_dir).resolve()) if args.lcbench_dir else None
    try:
        bench = get_benchmark(name, lcdir)
        if name == "lcbench":
            from lcbench import DEV_TASKS

            tasks = args.tasks.split(",") if args.tasks else list(DEV_TASKS)
            bench.surrogate.check_tasks(tasks)
        else:
            if args.tasks:
                raise ValueError(f"--tasks is for --benchmark lcbench; {name} has one task")
            tasks = bench.tasks
    except Exception as e:  # MissingBenchmark and bad task ids: one line
        print(f"replay: {e}", file=sys.stderr)
        return 2
    space = bench.space
    from search.layout import grace_period

    if name != "lcbench":
        evidence, rhos = rank_evidence(bench.table)
        print("rank correlation of one run's best-so-far cmAP with final quality, by epoch: "
              + " ".join(f"{e + 1}:{r:.2f}" for e, r in enumerate(rhos)) + f"  (first >= {RHO}: epoch {evidence})")
    else:
        rhos = []
        for t in tasks:  # each task's reference once, in this process, before the pool reads it
            bench.reference(t)
    methods = args.methods.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(m, name, t, b, w, s, args.grace, args.rf, lcdir) for b in budgets for w in workers for t in tasks
            for s in seeds for m in methods]
    t0 = time.time()
    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.processes) as pool:
        rows = list(tqdm(pool.imap_unordered(_run, jobs, chunksize=8), total=len(jobs), desc="replays",
                         mininterval=5 if sys.stderr.isatty() else 60))  # off a terminal: a line a minute
    wall = time.time() - t0
    per_task, agg = summarize(rows, methods)
    print(f"{name}: {len(tasks)} task(s), {len(seeds)} paired seeds (from {args.first_seed}), max_t {space.epochs}; "
          f"stock and random_asha: Ray's ASHA defaults (grace 1, reduction 4); birdtune's scheduler: grace "
          f"{args.grace or grace_period(space.grace_period, space.epochs)}, reduction {args.rf or space.reduction_factor}; "
          f"{len(jobs)} replays in {wall:.0f} s on {args.processes} process(es)")
    print("regret: (best - pick) / (best - median), pick scored at full length; diff and p: paired over (task, seed); "
          "Holm over this run's cells")
    print_table(agg)
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
        for b in budgets:
            for w in workers:
                anytime_plot(rows, methods, b, w, Path(args.plots) / f"anytime-{name}-{b}x{w}.png", name)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            benchmark=name, tasks=tasks, seeds=[seeds.start, seeds.stop - 1], methods=methods,
            rank_correlation_by_epoch=rhos, runs=per_task + agg, wall_s=wall, suggestion_ms=timing), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
