"""Syne Tune 0.16's schedulers driven through their TrialScheduler interface (suggest / on_trial_add /
on_trial_result / on_trial_complete, as its Tuner calls them): `synetune-bohb` (BOHB: asynchronous successive
halving with a KDE searcher) and `synetune-asha-cqr` (ASHA with a conformal quantile regression searcher), each
with its documented defaults (grace 1, reduction factor 3, one bracket), the benchmark's defaults as the first
config (points_to_evaluate). Every trial reports each epoch; the scheduler stops it or lets it go on. The pick
is the config with the best reported value (what Syne Tune's results' best_config gives)."""
from __future__ import annotations

from common import Cluster, distributions, version

METHODS = ("synetune-bohb", "synetune-asha-cqr")


def config_space(space) -> dict:
    from syne_tune import config_space as cs

    out = {}
    for name, d in distributions(space).items():
        if d["kind"] == "categorical":
            out[name] = cs.choice(d["choices"])
        elif d["kind"] == "int":
            out[name] = (cs.lograndint if d["log"] else cs.randint)(int(d["low"]), int(d["high"]))
        else:
            out[name] = (cs.loguniform if d["log"] else cs.uniform)(float(d["low"]), float(d["high"]))
    return out


def first_config(space) -> dict:
    """The benchmark's defaults, each parameter they lack (a conditional one: Syne Tune's spaces have none) at
    its domain's middle; Syne Tune 0.16 would hand such a parameter's domain object on as its value."""
    import math

    out = {}
    for name, d in distributions(space).items():
        if d["kind"] == "categorical":
            out[name] = d["choices"][0]
        else:
            mid = math.sqrt(d["low"] * d["high"]) if d["log"] else (d["low"] + d["high"]) / 2
            out[name] = int(round(mid)) if d["kind"] == "int" else mid
    return {**out, **dict(space.points[0])}


def run(bench, task: str, seed: int, workers: int, compute: int, method: str) -> dict:
    import logging
    from datetime import datetime

    import numpy as np
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.baselines import ASHACQR, BOHB
    from syne_tune.optimizer.scheduler import SchedulerDecision

    logging.getLogger("syne_tune").setLevel(logging.ERROR)
    np.random.seed(seed)  # its brackets are drawn with numpy's global generator
    cl = Cluster(bench, task, seed, workers, compute * bench.space().epochs)
    kind = BOHB if method == "synetune-bohb" else ASHACQR
    scheduler = kind(config_space(cl.space), metric="metric", time_attr="epoch", max_t=cl.max_t, do_minimize=False,
                     random_seed=seed, points_to_evaluate=[first_config(cl.space)])
    live: dict[int, Trial] = {}
    best: tuple[float, dict | None] = (-float("inf"), None)
    next_id = 0
    while True:
        while cl.free() > 0 and cl.used + cl.committed + 1 <= cl.budget:  # a new trial's first epoch fits
            suggestion = scheduler.suggest()
            if suggestion is None:
                break
            trial = Trial(trial_id=next_id, config=suggestion.config, creation_time=datetime.now())
            next_id += 1
            scheduler.on_trial_add(trial)
            cl.start(trial.trial_id, dict(trial.config), 1)
            live[trial.trial_id] = trial
        if not cl.running():
            break
        tid, config, epoch, value = cl.next()
        trial = live.pop(tid)
        if value > best[0]:
            best = (value, config)
        result = {"metric": value, "epoch": epoch}
        decision = scheduler.on_trial_result(trial, result)
        if decision == SchedulerDecision.STOP or epoch >= cl.max_t:
            scheduler.on_trial_complete(trial, result)
        elif cl.start(tid, config, epoch + 1):  # its next epoch comes before new trials
            live[tid] = trial
        else:  # the budget ends it
            scheduler.on_trial_complete(trial, result)
    return cl.result(best[1], tool="synetune", method=method, version=version("syne-tune"), compute=compute)
