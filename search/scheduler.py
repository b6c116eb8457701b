"""The schedulers `--scheduler` names: birdtune's ASHA (asynchronous successive halving with a promotion
budget, whose rungs come back on --resume) and FIFO (every trial to max_t)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

import spaces
from search import journal
from search.layout import SCHEDULERS, asha_rungs


# The promotion budget's multiple of successive halving's share, chosen on LCBench's 17 development tasks
# (50 seeds) and the finetune-default table (seeds 0-99), 16 and 32 trials on 2 and 4 workers. Mean quality
# of the pick over full-length random search's, and trial-epochs over its, at 16 trials on LCBench:
#   no budget 0.992-0.993 / 0.30;  1.5: 0.985-0.987 / 0.24-0.25;  2.5: 0.991 / 0.26-0.27;  4: 0.992-0.993 / 0.27
# (32 trials: 2.5 kept 0.992-0.994 at 0.20). On finetune-default 2.5 cut the epochs from 0.39-0.50 to
# 0.36-0.46 with a lower or equal regret; 1.5 cut more there (0.34-0.42) but lost LCBench's quality.
ASHA_BUDGET = 2.5


class BudgetedASHA(FIFOScheduler):
    """Asynchronous successive halving, one bracket, stopping trials (Ray's ASHAScheduler's rule, exactly: a
    trial reaching a rung continues if its score is at least the (1 - 1/rf) quantile of the scores recorded
    there before it, or if none are), plus a promotion budget when the number of trials is known.

    Asynchronous ASHA lets the first arrivals at a rung through (the first always, the second if it beats
    the first, ...), and a model-based searcher's later trials keep beating the early ones, so a search of
    16 trials let 40-48 % of full-length random search's epochs through. With the budget, rung k (from 0)
    promotes at most ceil(ASHA_BUDGET x num_samples / rf^(k+1)) trials, 2.5 x the share synchronous
    successive halving would promote; past that only a trial that beats every score recorded at the rung
    goes on, so an exceptional late trial is never cut. With no number of trials (a compute budget) the cap
    is that share of the trials recorded at the rung so far. Uses only Ray's public TrialScheduler interface."""

    def __init__(self, *, time_attr: str, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int, num_samples: int | None = None, budget: float = ASHA_BUDGET):
        super().__init__()
        self._time_attr, self._metric, self._mode, self._max_t = time_attr, metric, mode, max_t
        self._sign = 1.0 if mode == "max" else -1.0
        self._rf = reduction_factor
        self._rungs = asha_rungs(max_t, grace_period, reduction_factor)[:-1]
        self._recorded: dict[int, dict[str, float]] = {r: {} for r in self._rungs}
        self._promoted = {r: 0 for r in self._rungs}
        self._stopped: set[str] = set()
        self._cap = ({r: math.ceil(budget * num_samples / reduction_factor ** (i + 1))
                      for i, r in enumerate(self._rungs)} if num_samples and budget else {})
        # with no number of trials (a compute budget): the share of the trials recorded at the rung so far
        self._share = budget if not num_samples else 0.0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return (metric in (None, self._metric)) and (mode in (None, self._mode))

    def decide(self, trial_id: str, epoch: int, value: float | None) -> str:
        """CONTINUE or STOP for a trial's result at `epoch` (also used to rebuild the rungs from a log)."""
        if epoch >= self._max_t or trial_id in self._stopped:
            self._stopped.add(trial_id)
            return TrialScheduler.STOP
        rung = next((r for r in reversed(self._rungs) if epoch >= r), None)
        if rung is None or trial_id in self._recorded[rung] or value is None:
            return TrialScheduler.CONTINUE  # not at a new rung: the decision there was made
        v = self._sign * float(value)
        before = list(self._recorded[rung].values())
        # as Ray: stopped only if below the cutoff (a NaN score is never below it)
        go = not before or not v < float(np.nanpercentile(before, (1 - 1 / self._rf) * 100))
        if go and self._promotions_spent(rung):
            go = v > float(np.nanmax(before))  # the budget is spent: only a new leader goes on
        self._recorded[rung][trial_id] = v
        self._promoted[rung] += go
        if not go:
            self._stopped.add(trial_id)
        return TrialScheduler.CONTINUE if go else TrialScheduler.STOP

    def _promotions_spent(self, rung: int) -> bool:
        """Whether the rung has promoted as many trials as its promotion budget allows (before this one)."""
        if rung in self._cap:
            return self._promoted[rung] >= self._cap[rung]
        if self._share:
            return self._promoted[rung] >= math.ceil(self._share * (len(self._recorded[rung]) + 1) / self._rf)
        return False

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(result[self._time_attr]), result[self._metric])

    def choose_trial_to_run(self, tune_controller):
        """Ray's choice (FIFO), but a trial this scheduler stopped stays stopped: Ray stops a trial only after
        saving its checkpoint, and one whose worker died in between is restarted (TuneController._try_recover
        drops the pending STOP) and would run on. It is ended instead, its searcher told with the result it
        was stopped on (Ray hands a restarted trial's searcher none)."""
        from ray.tune.utils import flatten_dict

        for trial in list(tune_controller.get_trials()):
            if trial.status == "PENDING" and trial.trial_id in self._stopped:
                tune_controller.search_alg.on_trial_complete(trial.trial_id, result=flatten_dict(trial.last_result))
                tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return "BudgetedASHA: " + ", ".join(f"rung {r}: {len(v)} recorded, {self._promoted[r]} promoted"
                                           for r, v in self._recorded.items())


def replay(scheduler: BudgetedASHA, logged: list[dict[str, Any]]) -> dict[str, int]:
    """Feed logged results to an ASHA scheduler in their order, as Ray's controller did; returns each
    trial's epoch of STOP (max_t included)."""
    stopped: dict[str, int] = {}
    for r in logged:
        tid = r["trial_id"]
        if tid not in stopped and scheduler.decide(tid, int(r["epoch"]), r["cmap"]) == TrialScheduler.STOP:
            stopped[tid] = int(r["epoch"])
    return stopped


class ResumableASHA(BudgetedASHA):
    """birdtune's ASHA whose rungs come back on --resume. Ray's controller never saves or restores a
    scheduler's state (ray-project/ray#30838): a resumed search would start with empty rungs and keep
    trials an uninterrupted one would have stopped. On its first call this one replays the results of the
    search's journal (search.journal), in the order the driver took them; in a new search it is empty."""

    def __init__(self, *, journal: str | None = None, **kw):
        super().__init__(**kw)
        self._journal, self._replayed = journal, False

    def resume_with(self, *, journal: str | None) -> None:
        """Where the restored search's journal is now (tuning, on --resume)."""
        self._journal = journal or self._journal

    def _rebuild(self) -> None:
        if not self._replayed:
            self._replayed = True
            if self._journal:
                replay(self, journal.results(journal.read(self._journal)))

    def on_trial_add(self, tune_controller, trial):
        self._rebuild()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._rebuild()
        return super().on_trial_result(tune_controller, trial, result)


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: int, journal: str | None = None,
                   num_samples: int | None = None, budget: float = ASHA_BUDGET):
    """ASHA (with its promotion budget when num_samples is given and `budget`; rebuilt from the search's
    journal on --resume) or FIFO (every trial to max_t)."""
    if kind == "asha":
        return ResumableASHA(time_attr=spaces.TIME_ATTR, metric=spaces.METRIC, mode=spaces.MODE, max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor, journal=journal,
                             num_samples=num_samples, budget=budget)
    if kind == "none":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler '{kind}'; choose {', '.join(SCHEDULERS)}")
