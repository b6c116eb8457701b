"""One line per finished trial instead of Ray's tables: what ended, how, and the best so far."""
from __future__ import annotations

import time

from ray import tune

import spaces
from search.export import trial_status


class TrialLines(tune.Callback):
    def __init__(self, max_t: int, total: int):
        self.max_t, self.total, self.t0 = max_t, total, time.time()
        self.best = float("-inf")
        self.done = 0
        self.trial_best: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(spaces.METRIC)
        if value is not None:
            self.trial_best[trial.trial_id] = max(self.trial_best.get(trial.trial_id, float("-inf")), value)

    def _line(self, trial, how: str) -> None:
        self.done += 1
        mine = self.trial_best.get(trial.trial_id, float("nan"))
        if mine == mine:
            self.best = max(self.best, mine)
        elapsed = time.time() - self.t0
        print(f"[{elapsed:6.0f}s] trial {self.done:>3}/{self.total} {how:<28} cmap {mine:.4f}   best so far "
              f"{self.best:.4f}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epoch = last.get(spaces.TIME_ATTR, 0)
        status = trial_status("TERMINATED", epoch, self.max_t, last.get("status") == "diverged")
        how = {"diverged": f"diverged at epoch {epoch}", "completed": f"completed {epoch} epochs",
               "stopped_early": f"stopped early at epoch {epoch}"}[status]
        self._line(trial, how)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "errored")
