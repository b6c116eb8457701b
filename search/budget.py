"""A search's compute budget: --time-budget (the search's wall time) and --epoch-budget (trial-epochs: the same on
any hardware). A search with a budget and no --num-samples starts trials until the budget would be spent.

What is spent is counted from the journal (the results taken and the time between a run's first and last
event, over every run before a --resume) and by the Meter during this run: Ray hands it every result
before the scheduler and the searcher see it, and ends the search (cutting what still runs) once the budget
is spent. The searcher starts a new trial only while the epochs the running trials are owed up to their next
ASHA rung, plus the new trial's first rung, fit in what is left (`Meter.allows`).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'2h', '90m', '45s', '1.5h' or plain seconds ('3600') -> seconds; ValueError naming the input otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"--time-budget {text}: give a duration above 0 such as 2h, 90m, 45s or 3600 (seconds)")
    return float(m.group(1)) * UNITS[m.group(2) or "s"]


def duration(seconds: float) -> str:
    """3600 -> '1h', 5400 -> '1h30m', 90 -> '1m30s'."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


@dataclass(frozen=True)
class Budget:
    """What a search may spend; either or both (whichever runs out first)."""

    epochs: int | None = None  # trial-epochs
    seconds: float | None = None  # wall time of the search (Ray's loop), over every run of it

    def __bool__(self) -> bool:
        return self.epochs is not None or self.seconds is not None

    def describe(self) -> str:
        parts = ([f"{self.epochs} trial-epochs"] if self.epochs is not None else []) + \
                ([f"{duration(self.seconds)} of search time"] if self.seconds is not None else [])
        return " or ".join(parts)


@dataclass(frozen=True)
class Spent:
    """What earlier runs of a search spent, from its journal."""

    epochs: int = 0
    seconds: float = 0.0

    @classmethod
    def from_journal(cls, events: list[dict[str, Any]]) -> "Spent":
        """Every result taken is one trial-epoch. A run's time is what its meter counted, recorded when it ended
        (a `run` event); a run killed before that counts from its first event to its last (runs are separated
        by the resume records search.recovery writes)."""
        epochs, seconds = 0, 0.0
        first = last = counted = None
        for e in events + [{"event": "resume"}]:
            if e["event"] == "resume":
                if counted is not None:
                    seconds += counted
                elif first is not None:
                    seconds += last - first
                first = last = counted = None
                continue
            if e["event"] == "result":
                epochs += 1
            elif e["event"] == "run":
                counted = float(e["seconds"])
            t = e.get("t")
            if t is not None:
                first = t if first is None else first
                last = t
        return cls(epochs, seconds)

    def describe(self, budget: Budget) -> str:
        parts = ([f"{self.epochs} of {budget.epochs} trial-epochs"] if budget.epochs is not None else []) + \
                ([f"{duration(self.seconds)} of {duration(budget.seconds)}"] if budget.seconds is not None else [])
        return ", ".join(parts)


class Meter:
    """Counts the trial-epochs and the time a search spends, from what earlier runs spent (`spent`), and ends
    the search once its budget is spent: Ray calls it with every result and asks stop_all at every step, as it
    does a Stopper (search.tuning hands it to Ray as one; this module imports no Ray, so that plan.py can
    check a budget before Ray starts)."""

    def __init__(self, budget: Budget, spent: Spent = Spent()):
        self.budget, self.before = budget, spent
        self.epochs = spent.epochs
        self.full = False  # no new trial fits in what is left and none runs (set by the searcher)
        # paused trials ASHA promoted, running again from their checkpoints -> their last epoch: the scheduler's
        # own dict (search.scheduler.BudgetedASHA.use_budget; it sees every trial end, the searcher is not told
        # of a continued trial's)
        self.continuing: dict[str, int] = {}
        self._t0: float | None = None
        self._stopped_at: float | None = None  # when stop_all first said the budget was spent
        self._seconds: list[float] = []  # each result's epoch time, for the time a new trial's first rung takes

    def __getstate__(self):  # pickled with the Tuner: the clock starts again in the run that unpickles it
        return {"budget": self.budget, "before": self.before, "epochs": self.epochs, "full": False, "_t0": None,
                "_stopped_at": None, "_seconds": [], "continuing": {}}

    def exhausted(self) -> bool:
        """Whether the budget ended the search: spent, or too little left for another trial."""
        return self.full or self.stop_all()

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()

    def seconds(self) -> float:
        """The search's time so far, earlier runs included."""
        return self.before.seconds + self.this_run()

    def this_run(self) -> float:
        """Seconds since this run's search loop started, up to the moment the budget ended it (Ray's stopping
        of the trials after that, which waits for a worker still starting, is not search time)."""
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        return end - self._t0 if self._t0 is not None else 0.0

    def spent(self) -> Spent:
        return Spent(self.epochs, self.seconds())

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.start()
        self.epochs += 1
        if result.get("time_this_iter_s"):
            self._seconds.append(float(result["time_this_iter_s"]))
        return False  # a single trial is never stopped for the budget: stop_all ends them all

    def stop_all(self) -> bool:
        self.start()
        if self._stopped_at is not None:
            return True
        b = self.budget
        spent = (b.epochs is not None and self.epochs >= b.epochs) or (b.seconds is not None and self.seconds() >= b.seconds)
        if spent:
            self._stopped_at = time.monotonic()
        return spent

    def allows(self, owed: int, first_rung: int, concurrency: int = 1) -> bool:
        """Whether a new trial may start: the epochs running trials are still owed up to their next rung
        (`owed`) and the new trial's first rung fit in the epochs left; and its first rung, at the epoch time
        seen so far, in the time left (shared by `concurrency` trials at once)."""
        if self.stop_all():
            return False
        b = self.budget
        if b.epochs is not None and self.epochs + owed + first_rung > b.epochs:
            return False
        if b.seconds is not None and self._seconds:
            per_epoch = sum(self._seconds[-50:]) / len(self._seconds[-50:])
            if self.seconds() + (owed / max(1, concurrency) + first_rung) * per_epoch > b.seconds:
                return False
        return True


def owed(last_epochs: Iterable[int], rungs: list[int]) -> int:
    """Epochs the running trials (their last reported epochs) are owed up to their next rung (or the last)."""
    total = 0
    for e in last_epochs:
        nxt = next((r for r in rungs if r > e), None)
        total += (nxt - e) if nxt is not None else 0
    return total
