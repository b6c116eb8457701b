"""The searchers and schedulers `--searcher` and `--scheduler` name, and the ASHA-aware Optuna searcher.

Stock `OptunaSearch` tells Optuna that a trial ASHA cut off after one epoch is COMPLETE with its
one-epoch score, so TPE models it as if it were a full-length result. `AshaAwareOptunaSearch` reports
every epoch as an intermediate value and tells Optuna what really happened: PRUNED for a trial stopped
before max_t (Optuna's TPE ranks pruned trials by how far they got, then by their last value), FAIL for
an errored or diverged one, COMPLETE with its best-epoch score for one that ran to max_t.
"""
from __future__ import annotations

import os
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

import spaces
from search.export import DB_FILE

SEARCHERS = ("tpe", "random")
SCHEDULERS = ("asha", "none")


def sqlite_storage(path: str) -> optuna.storages.RDBStorage:
    # a reader (optuna-dashboard) may hold the file for a moment: wait for it rather than fail a tell()
    return optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(path)}",
                                      engine_kwargs={"connect_args": {"timeout": 60}})


class AshaAwareOptunaSearch(OptunaSearch):
    def __init__(self, *, max_t: int, time_attr: str = spaces.TIME_ATTR, db_path: str | None = None, **kw):
        if db_path:
            kw["storage"] = sqlite_storage(db_path)
        super().__init__(**kw)
        self._max_t, self._time_attr, self._db_path = max_t, time_attr, db_path
        self._last_epoch: dict[str, int] = {}
        self._diverged: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and getattr(self, "_orphans", None):
            # asked for after the last saved searcher state, then the driver died: reuse, do not add
            self._ot_trials[trial_id] = self._orphans.pop(0)
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        epoch = int(result.get(self._time_attr, 0))
        self._last_epoch[trial_id] = max(epoch, self._last_epoch.get(trial_id, 0))
        if result.get("status") == "diverged":  # its score is a placeholder, not a measurement
            self._diverged.add(trial_id)
            return
        value = result.get(self.metric)
        if value is not None and epoch >= 1:
            # after a restart from a checkpoint an epoch may come again: Optuna keeps the first and warns
            ot_trial = self._ot_trials[trial_id]
            if epoch not in self._intermediate(trial_id):
                ot_trial.report(float(value), epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result and not error:
            self.on_trial_result(trial_id, result)  # the final result may not have come through on_trial_result
        ot_trial = self._ot_trials[trial_id]
        values = self._intermediate(trial_id)
        if error or trial_id in self._diverged:
            state, value = TrialState.FAIL, None
        elif self._last_epoch.get(trial_id, 0) >= self._max_t and values:
            state, value = TrialState.COMPLETE, max(values.values()) if self.mode == "max" else min(values.values())
        else:  # stopped by the scheduler (or the time budget) before max_t
            state, value = TrialState.PRUNED, None
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if frozen.state == TrialState.RUNNING:  # already told before a driver restart: do not count it twice
            self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def _intermediate(self, trial_id: str) -> dict[int, float]:
        return self._ot_study._storage.get_trial(self._ot_trials[trial_id]._trial_id).intermediate_values

    def restore(self, checkpoint_path: str) -> None:
        """Continue the study in the experiment's own optuna.db (found beside the searcher state), so a
        moved results folder still resumes the same study."""
        super().restore(checkpoint_path)
        here = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), DB_FILE)
        if self._db_path and os.path.isfile(here):
            self._db_path = here
            self._storage = sqlite_storage(here)
            self._ot_study = optuna.load_study(study_name=self._study_name, storage=self._storage,
                                               sampler=self._sampler)
            self._ot_trials = {tid: optuna.Trial(self._ot_study, t._trial_id) for tid, t in self._ot_trials.items()}
        # Optuna trials asked for after that state was saved (a killed driver) are RUNNING in the study but
        # unknown to Tune: the next new trials take them over, so the study holds each trial once
        known = {t._trial_id for t in self._ot_trials.values()}
        self._orphans = [optuna.Trial(self._ot_study, t._trial_id)
                         for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                         if t._trial_id not in known]


def tune_domains(space: spaces.Space) -> dict[str, Any]:
    """The space as Ray Tune domains, for Ray's random search. Bounds stay inclusive, as Optuna's."""
    out: dict[str, Any] = {}
    for name, d in space.distributions().items():
        if d["kind"] == "categorical":
            out[name] = tune.choice(d["choices"])
        elif d["kind"] == "float":
            if d["step"]:
                out[name] = tune.quniform(d["low"], d["high"], d["step"])
            else:
                out[name] = (tune.loguniform if d["log"] else tune.uniform)(d["low"], d["high"])
        elif d["log"]:
            out[name] = tune.lograndint(d["low"], d["high"] + 1)  # randint's upper bound is exclusive
        elif d["step"] and d["step"] != 1:
            out[name] = tune.qrandint(d["low"], d["high"], d["step"])  # qrandint's is inclusive
        else:
            out[name] = tune.randint(d["low"], d["high"] + 1)
    return out


def startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the results: Optuna's 10 would leave a 16-trial search only 6
    guided trials; a quarter of the budget, between 4 and 10."""
    return min(10, max(4, num_samples // 4))


def make_searcher(kind: str, space: spaces.Space, *, max_t: int, seed: int, study_name: str,
                  db_path: str | None, concurrency: int, num_samples: int):
    """(search_alg, param_space) for Tuner: TPE over the space's define-by-run function, or Ray's random search."""
    points = [dict(p) for p in space.points]
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials(num_samples))
        return AshaAwareOptunaSearch(space=space.define, metric=spaces.METRIC, mode=spaces.MODE, max_t=max_t,
                                     points_to_evaluate=points, sampler=sampler, study_name=study_name,
                                     db_path=db_path), None
    if kind == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune's max_concurrent_trials does not reach a SearchGenerator: the generator limits itself
        return (BasicVariantGenerator(points_to_evaluate=points, random_state=seed, max_concurrent=concurrency),
                tune_domains(space))
    raise ValueError(f"unknown searcher '{kind}'; choose {', '.join(SEARCHERS)}")


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if kind == "asha":
        return ASHAScheduler(time_attr=spaces.TIME_ATTR, metric=spaces.METRIC, mode=spaces.MODE, max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor)
    if kind == "none":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler '{kind}'; choose {', '.join(SCHEDULERS)}")
