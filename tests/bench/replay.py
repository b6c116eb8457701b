"""Search quality on recorded learning curves: many simulated searches, paired by seed, per method, budget and
worker count, as Syne Tune's simulator backend does it.

    python tests/bench/replay.py [--space finetune] [--size tiny] [--seeds 100] [--first-seed 0]
                                 [--budgets 16,32,64] [--workers 2,4,8] [--methods random_full,random_asha,...]
                                 [--json PATH] [--plots DIR] [--processes 2]

The curves are tests/bench/data/<space>-<size>.parquet (tests/bench/record.py): configs drawn uniformly from
the space, each trained for the space's full epochs with 2 training seeds. A simulated search drives the
real objects through Ray Tune's public interfaces, without starting Ray: a Searcher's suggest /
on_trial_result / on_trial_complete and a TrialScheduler's on_trial_add / on_trial_result /
on_trial_complete, in the order Ray's TuneController calls them. W workers run trials on a simulated
clock: each epoch of a trial is an event at its recorded time; a stopped trial's later epochs are
dropped; the searcher's own time per suggestion (measured) delays the trial it starts.

A config the table lacks is answered by its nearest recorded neighbour in the space scaled to [0, 1]
(log scale where the space samples on one); which of its 2 training seeds answers is drawn per (replay
seed, config), so every method meets the same noise, and a recorded config met again in one search
answers with its other seed (a rerun near a config is a new training run; with one draw per config the
local proposals of a model-based searcher would be wasted copies). The quality of a config is the mean over its 2
seeds of its best epoch's cmAP at full length; a search's pick is the trial with the best cmAP it
observed (what birdtune exports); its regret is (best quality in the table - the pick's quality) /
(best - worst quality in the table).

Methods: random_full (random search, every trial at full length), random_asha, stock (OptunaSearch with
Optuna's defaults + ASHA), birdtune (whatever --searcher's default is) and every searcher of
search.searcher by name (tpe, mftpe, ...). The random methods draw through Optuna's RandomSampler in
Ray's OptunaSearch, so that under one seed every Optuna-based method starts from the same configs.
Not collected by pytest.
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


class FakeTrial:
    """What Ray's schedulers read of a Trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config, self.status = trial_id, config, "RUNNING"


def make_method(name: str, space, seed: int, budget: int, workers: int, grace: int, rf: int):
    """(searcher, scheduler) of a method, as a search with these settings would build them."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search import searcher as searchers

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    asha = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=space.epochs, grace_period=grace,
                         reduction_factor=rf)
    if name in ("random_full", "random_asha"):
        s = OptunaSearch(space=space.define, metric=METRIC, mode=MODE, sampler=optuna.samplers.RandomSampler(seed=seed))
        return s, (FIFOScheduler() if name == "random_full" else asha)
    if name == "stock":
        return OptunaSearch(space=space.define, metric=METRIC, mode=MODE, seed=seed), asha
    kind, *opts = (searchers.DEFAULT if name == "birdtune" else name).split(":")
    s, _ = searchers.make_searcher(kind, space, max_t=space.epochs, seed=seed, study_name=f"replay-{seed}",
                                   db_path=None, concurrency=workers, num_samples=budget,
                                   grace_period=grace, reduction_factor=rf)
    for opt in opts:  # variants for exploring, e.g. mftpe:_min_points=5
        key, value = opt.split("=")
        setattr(s, key, type(getattr(s, key))(value))
    return s, asha


_TABLE: Table | None = None


def simulate(method: str, space_name: str, size: str, budget: int, workers: int, seed: int,
             grace: int, rf: int) -> dict:
    """One simulated search; returns its pick's quality, regret, trial-epochs and anytime curve."""
    global _TABLE
    if _TABLE is None:
        _TABLE = Table.load(space_name, size)
    t = _TABLE
    space = t.space.on_demo()
    np.random.seed(seed)  # ASHA draws its bracket with numpy's global generator
    searcher, scheduler = make_method(method, space, seed, budget, workers, grace, rf)
    max_t = space.epochs
    best_q, worst_q = t.quality.max(), t.quality.min()
    events: list = []  # (time, order, trial_id)
    trials: dict[str, dict] = {}
    driver, created, order, epochs_used = 0.0, 0, 0, 0
    incumbent = (-1.0, None)  # observed cmAP, config row
    anytime: list[tuple[int, float]] = []
    suggest_s: list[float] = []
    hits: dict[int, int] = {}
    running = 0

    def launch(now: float) -> bool:
        nonlocal created, driver, order, running
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
        row = t.nearest(config)
        # the noise draw: which recorded training seed answers, the same for every method under this seed;
        # a config hit again gets the other seed (a rerun near it is a new training run, not a copy)
        base = int(np.random.default_rng([seed, row]).integers(t.cmap.shape[1]))
        draw = (base + hits.get(row, 0)) % t.cmap.shape[1]
        hits[row] = hits.get(row, 0) + 1
        driver = max(driver, now) + dt
        trial = FakeTrial(tid, config)
        scheduler.on_trial_add(None, trial)
        trials[tid] = dict(trial=trial, row=row, draw=draw, epoch=0)
        heapq.heappush(events, (driver + t.seconds[row, draw, 0], order, tid))
        order += 1
        running += 1
        return True

    for _ in range(workers):
        if not launch(0.0):
            break
    from ray.tune.schedulers import TrialScheduler

    while events:
        now, _, tid = heapq.heappop(events)
        st = trials[tid]
        e = st["epoch"] + 1
        st["epoch"] = e
        value = float(t.cmap[st["row"], st["draw"], e - 1])
        epochs_used += 1
        result = {"epoch": e, "training_iteration": e, METRIC: value, "trial_id": tid}
        if value > incumbent[0]:
            incumbent = (value, st["row"])
        anytime.append((epochs_used, (best_q - t.quality[incumbent[1]]) / (best_q - worst_q)))
        decision = scheduler.on_trial_result(None, st["trial"], result)
        if decision == TrialScheduler.STOP or e >= max_t:
            searcher.on_trial_complete(tid, result=result)
            scheduler.on_trial_complete(None, st["trial"], result)
            running -= 1
            launch(now)
        else:
            searcher.on_trial_result(tid, result)
            heapq.heappush(events, (max(now, driver) + t.seconds[st["row"], st["draw"], e], order, tid))
            order += 1
    pick = incumbent[1]
    return dict(method=method, budget=budget, workers=workers, seed=seed, quality=float(t.quality[pick]),
                regret=float((best_q - t.quality[pick]) / (best_q - worst_q)), epochs=epochs_used,
                trials=created, anytime=anytime, suggest_ms=1000 * float(np.median(suggest_s)) if suggest_s else 0.0)


def _run(args):
    return simulate(*args)


RHO = 0.8  # the rank correlation an ASHA rung's scores must reach with the final ones


def asha_from_evidence(table: Table, rho: float = RHO) -> tuple[int, list[float]]:
    """The rule for ASHA's grace period: the first epoch at which one training run's best score so far
    ranks the recorded configs as their final quality does with Spearman's rho >= `rho` (what a search sees
    at a rung is one seed's curve). Returns the epoch and the correlation at every epoch."""
    from scipy.stats import spearmanr

    best_so_far = np.maximum.accumulate(table.cmap[:, 0, :], axis=1)
    rhos = [float(spearmanr(best_so_far[:, e], table.quality).correlation) for e in range(best_so_far.shape[1])]
    grace = next((e + 1 for e, r in enumerate(rhos) if r >= rho), len(rhos))
    return grace, rhos


def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half."""
    x = np.sort(np.asarray(x, float))
    n = len(x)
    lo, hi = int(math.floor(n * 0.25)), int(math.ceil(n * 0.75))
    return float(x[lo:hi].mean()) if hi > lo else float(x.mean())


def bootstrap(x: np.ndarray, stat=iqm, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x = np.asarray(x, float)
    vals = [stat(x[rng.integers(len(x), size=len(x))]) for _ in range(n)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def summarize(rows: list[dict], methods: list[str]) -> list[dict]:
    from scipy.stats import wilcoxon

    df = pd.DataFrame([{k: v for k, v in r.items() if k != "anytime"} for r in rows])
    out = []
    for (budget, workers), cell in df.groupby(["budget", "workers"]):
        full = cell[cell.method == "random_full"].set_index("seed")
        stock = cell[cell.method == "stock"].set_index("seed")
        for method in methods:
            g = cell[cell.method == method].set_index("seed").sort_index()
            if g.empty:
                continue
            low, high = bootstrap(g["regret"].to_numpy())
            p = float("nan")
            if method != "stock" and not stock.empty:
                both = g.index.intersection(stock.index)
                diff = g.loc[both, "regret"] - stock.loc[both, "regret"]
                if (diff != 0).any():
                    p = float(wilcoxon(g.loc[both, "regret"], stock.loc[both, "regret"], alternative="less").pvalue)
            out.append(dict(method=method, budget=int(budget), workers=int(workers), seeds=len(g),
                            iqm_best=iqm(g["quality"]), iqm_regret=iqm(g["regret"]), ci_low=low, ci_high=high,
                            epochs_fraction=float(g["epochs"].mean() / full["epochs"].mean()) if not full.empty else float("nan"),
                            best_vs_full=float(iqm(g["quality"]) / iqm(full["quality"])) if not full.empty else float("nan"),
                            p_vs_stock=p, suggest_ms=float(g["suggest_ms"].median())))
    return out


def anytime_plot(rows: list[dict], methods: list[str], budget: int, workers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in methods:
        runs = [r for r in rows if r["method"] == method and r["budget"] == budget and r["workers"] == workers]
        if not runs:
            continue
        grid = np.arange(1, max(r["epochs"] for r in runs) + 1)
        curves = []
        for r in runs:
            e, reg = zip(*r["anytime"])
            curves.append(np.interp(grid, e, reg, left=1.0))
        curves = np.array(curves)
        ax.plot(grid, [iqm(curves[:, i]) for i in range(len(grid))], label=method)
    ax.set(xlabel="trial-epochs used", ylabel="IQM normalised regret", yscale="log",
           title=f"{budget} trials, {workers} workers, {len(runs)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="finetune")
    p.add_argument("--size", default="tiny", choices=["tiny", "default"])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--budgets", default="16,32,64")
    p.add_argument("--workers", default="2,4,8")
    p.add_argument("--methods", default="random_full,random_asha,stock,tpe,birdtune")
    p.add_argument("--grace", type=int, help="ASHA grace period (default: the space's demo setting; 0: by the rule)")
    p.add_argument("--rf", type=int, help="ASHA reduction factor (default: the space's demo setting)")
    p.add_argument("--json", help="write the table (and every run's figures) here")
    p.add_argument("--plots", help="folder for the anytime plots (PNG)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timing", action="store_true", help="also time the default searcher at 64/256/1024 trials")
    args = p.parse_args()
    import spaces

    space = spaces.get(args.space).on_demo()
    evidence, rhos = asha_from_evidence(Table.load(args.space, args.size))
    print("rank correlation of one run's best-so-far cmAP with final quality, by epoch: "
          + " ".join(f"{e + 1}:{r:.2f}" for e, r in enumerate(rhos)) + f"  -> grace period by the rule (rho >= {RHO}): {evidence}")
    grace = evidence if args.grace == 0 else (args.grace or space.grace_period)
    rf = args.rf or space.reduction_factor
    methods = args.methods.split(",")
    budgets = [int(b) for b in args.budgets.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(m, args.space, args.size, b, w, s, grace, rf) for b in budgets for w in workers for s in seeds
             for m in methods]
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.processes) as pool:
        rows = []
        for i, r in enumerate(pool.imap_unordered(_run, tasks, chunksize=4), 1):
            rows.append(r)
            if i % 200 == 0:
                print(f"  {i}/{len(tasks)} replays, {time.time() - t0:.0f} s", flush=True)
    table = summarize(rows, methods)
    print(f"{args.space} on the {args.size} demo's recorded curves: {len(seeds)} paired seeds, ASHA grace {grace}, "
          f"reduction {rf}, max_t {space.epochs}; {len(tasks)} replays in {time.time() - t0:.0f} s")
    print(f"{'budget':>6} {'W':>3} {'method':<12} {'IQM best':>9} {'x full':>7} {'IQM regret':>11} {'95% CI':>17} "
          f"{'epochs':>7} {'p vs stock':>11} {'ms/sugg':>8}")
    for r in table:
        print(f"{r['budget']:>6} {r['workers']:>3} {r['method']:<12} {r['iqm_best']:>9.4f} {r['best_vs_full']:>7.3f} "
              f"{r['iqm_regret']:>11.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] {r['epochs_fraction']:>7.2f} "
              f"{r['p_vs_stock']:>11.2g} {r['suggest_ms']:>8.1f}")
    timing = {}
    if args.timing:
        from search import searcher as searchers

        for n in (64, 256, 1024):
            timing[n] = suggestion_time(searchers.DEFAULT, space, n)
            print(f"default searcher ({searchers.DEFAULT}): {timing[n]:.1f} ms per suggestion with {n} finished trials")
    if args.plots:
        Path(args.plots).mkdir(parents=True, exist_ok=True)
        for b in budgets:
            for w in workers:
                anytime_plot(rows, methods, b, w, Path(args.plots) / f"anytime-{args.space}-{args.size}-{b}x{w}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(space=args.space, size=args.size, grace_period=grace,
                                                   reduction_factor=rf, rank_correlation_by_epoch=rhos, runs=table,
                                                   suggestion_ms=timing), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
