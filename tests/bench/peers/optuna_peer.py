"""Optuna 5 as a user would run it instead of birdtune: TPESampler with Optuna's defaults (multivariate, constant
liar) and HyperbandPruner (`optuna-hyperband`) or SuccessiveHalvingPruner (`optuna-sha`) with theirs; every
trial reports each epoch and is pruned when the pruner says so; the benchmark's defaults are the first trial
(enqueued). The pick is study.best_trial (the best COMPLETE trial), or the trial with the best value at its
last epoch while none completed."""
from __future__ import annotations

from common import Cluster, version

METHODS = ("optuna-hyperband", "optuna-sha")


def run(bench, task: str, seed: int, workers: int, compute: int, method: str) -> dict:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cl = Cluster(bench, task, seed, workers, compute * bench.space().epochs)
    space, max_t = cl.space, cl.max_t
    pruner = optuna.pruners.HyperbandPruner() if method == "optuna-hyperband" else optuna.pruners.SuccessiveHalvingPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    study.enqueue_trial(dict(space.points[0]))
    live: dict[int, optuna.Trial] = {}
    last: dict[int, float] = {}
    while True:
        while cl.free() > 0 and cl.used + cl.committed + 1 <= cl.budget:  # a new trial's first epoch fits
            trial = study.ask()
            space.define(trial)
            cl.start(trial.number, trial.params, 1)
            live[trial.number] = trial
        if not cl.running():
            break
        n, config, epoch, value = cl.next()
        trial = live.pop(n)
        trial.report(value, epoch)
        last[n] = value
        if epoch >= max_t:
            study.tell(trial, value)
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
        elif cl.start(n, config, epoch + 1):  # its next epoch comes before new trials
            live[n] = trial
        else:  # the budget ends it
            study.tell(trial, state=TrialState.PRUNED)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    if complete:
        pick = study.best_trial.params
    else:
        pick = study.trials[max(last, key=last.get)].params if last else None
    return cl.result(pick, tool="optuna", method=method, version=version("optuna"), compute=compute)
