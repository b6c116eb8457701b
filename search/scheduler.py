"""The schedulers `--scheduler` names: birdtune's ASHA (asynchronous successive halving with a promotion
budget, whose rungs come back on --resume) and FIFO (every trial to max_t)."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

import spaces
from search import journal
from search.layout import SCHEDULERS, TAIL_FILL, asha_rungs


# The promotion budget's multiple of successive halving's share, chosen on LCBench's 17 development tasks
# (50 seeds) and the finetune-default table (seeds 0-99), 16 and 32 trials on 2 and 4 workers. Mean quality
# of the pick over full-length random search's, and trial-epochs over its, at 16 trials on LCBench:
#   no budget 0.992-0.993 / 0.30;  1.5: 0.985-0.987 / 0.24-0.25;  2.5: 0.991 / 0.26-0.27;  4: 0.992-0.993 / 0.27
# (32 trials: 2.5 kept 0.992-0.994 at 0.20). On finetune-default 2.5 cut the epochs from 0.39-0.50 to
# 0.36-0.46 with a lower or equal regret; 1.5 cut more there (0.34-0.42) but lost LCBench's quality.
ASHA_BUDGET = 2.5
TAIL_FILL_AUTO = 8  # auto: on from this many trials at once


class BudgetedASHA(FIFOScheduler):
    """Asynchronous successive halving, one bracket, stopping trials (Ray's ASHAScheduler's rule, exactly: a
    trial reaching a rung continues if its score is at least the (1 - 1/rf) quantile of the scores recorded
    there before it, or if none are), plus a promotion budget when the number of trials is known.

    Asynchronous ASHA lets the first arrivals at a rung through (the first always, the second if it beats
    the first, ...), and a model-based searcher's later trials keep beating the early ones, so a search of
    16 trials let 40-48 % of full-length random search's epochs through. With the budget, rung k (from 0)
    promotes at most ceil(ASHA_BUDGET x num_samples / rf^(k+1)) trials, 2.5 x the share synchronous
    successive halving would promote; past that only a trial that beats every score recorded at the rung
    goes on, so an exceptional late trial is never cut.

    With no number of trials (a compute budget: --time-budget / --epoch-budget) it is ASHA as its paper
    states it, promotion-based (`promote`): a trial reaching a rung goes on only if it ranks among the best
    floor(n / rf) of the n trials recorded there and was not promoted before; otherwise it is paused (stopped,
    its checkpoint kept), and a free worker continues the best paused trial that has come to rank so (the
    highest rung first) before any new trial starts. So no trial is promoted for arriving first: on LCBench's
    development tasks at budgets of 4-32 full-length trials this lowered the regret of the pick (docs/
    search-quality.md). (promote=False keeps the stopping rule with the budget's cap taken as that share of the
    trials recorded at the rung so far.) Uses only Ray's public TrialScheduler interface."""

    def __init__(self, *, time_attr: str, metric: str, mode: str, max_t: int, grace_period: int,
                 reduction_factor: int, num_samples: int | None = None, budget: float = ASHA_BUDGET,
                 workers: int | None = None, promote: bool | None = None, fill_workers: int | None | str = "workers"):
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
        # with no number of trials (a compute budget): ASHA's promotion rule, trials paused at each rung
        self.promote = (not num_samples) if promote is None else bool(promote)
        self._share = budget if not num_samples and not self.promote else 0.0
        self._promoted_ids: dict[int, set[str]] = {r: set() for r in self._rungs}
        self._resumable: dict[str, int] = {}  # paused trial -> the rung it is paused at (promote mode)
        self._workers = workers  # trials at once (promote mode: a paused trial is promoted onto a free worker)
        # promoted trials Ray has not ended again -> their last epoch; the budget's meter holds the same dict
        self.continuing: dict[str, int] = {}
        tail = workers if fill_workers == "workers" else fill_workers  # the tail fill's workers (None: it is off)
        self.tail = TailFill(self, num_samples, tail) if num_samples and tail else None

    def __setstate__(self, state: dict) -> None:
        """Restored from a search's saved state: one saved before promote mode existed stops trials as then."""
        self.__dict__.update(state)
        for key, default in (("promote", False), ("_workers", None)):
            self.__dict__.setdefault(key, default)
        self.__dict__.setdefault("_promoted_ids", {r: set() for r in self._rungs})
        self.__dict__.setdefault("_resumable", {})
        self.__dict__.setdefault("continuing", {})

    def use_budget(self, meter) -> None:
        """The budget's meter (search.budget.Meter) holds the promoted trials running again, which the searcher
        reads when it decides whether a new trial fits: the epochs they are owed count as a running trial's do."""
        meter.continuing = self.continuing

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
        if self.promote:
            return self._decide_promote(trial_id, rung, v)
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

    def _decide_promote(self, trial_id: str, rung: int, v: float) -> str:
        """Promote mode: the trial goes on only if it is among the rung's best 1/rf of the trials recorded there
        so far (itself included) and not promoted before; else it is paused (stopped, its checkpoint kept) and
        may be promoted later, when the rung holds enough trials for it to rank among their best 1/rf."""
        self._recorded[rung][trial_id] = v
        if trial_id in self.promotable(rung):
            self._mark_promoted(trial_id, rung)
            return TrialScheduler.CONTINUE
        self._stopped.add(trial_id)
        self._resumable[trial_id] = rung
        return TrialScheduler.STOP

    def promotable(self, rung: int) -> list[str]:
        """The rung's best floor(n / rf) of its n recorded trials (a NaN score last), less those promoted from
        it: ASHA's promotion rule (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020)."""
        rec = self._recorded[rung]
        k = len(rec) // self._rf
        if not k:
            return []
        best = sorted(rec, key=lambda t: -rec[t] if not math.isnan(rec[t]) else math.inf)[:k]
        return [t for t in best if t not in self._promoted_ids[rung]]

    def choose_promotion(self, ready=lambda tid: True) -> str | None:
        """Promote mode: the paused trial a free worker continues before any new trial starts (the highest rung
        first), or None. It counts as promoted from its rung, and its next results are judged at the next.
        `ready(trial_id)`: True if it can go on now, None if not yet (still ending), False if never."""
        for rung in reversed(self._rungs):
            for tid in self.promotable(rung):
                if self._resumable.get(tid) != rung:
                    continue
                can = ready(tid)
                if can is False:
                    self.not_resumable(tid)
                elif can:
                    self.resume(tid)
                    self.continuing[tid] = rung
                    return tid
        return None

    def resume(self, trial_id: str) -> None:
        """The paused trial goes on (chosen, or found continued in a resumed search's journal)."""
        rung = self._resumable.pop(trial_id, None)
        if rung is None:
            rung = max((r for r in self._rungs if trial_id in self._recorded[r]), default=None)
        if rung is not None:
            self._mark_promoted(trial_id, rung)
        self._stopped.discard(trial_id)

    def _mark_promoted(self, trial_id: str, rung: int) -> None:
        if trial_id not in self._promoted_ids[rung]:
            self._promoted_ids[rung].add(trial_id)
            self._promoted[rung] += 1

    def not_resumable(self, trial_id: str) -> None:
        """A paused trial that cannot go on (failed, diverged, or no checkpoint): never promoted."""
        self._resumable.pop(trial_id, None)

    def _promotions_spent(self, rung: int) -> bool:
        """Whether the rung has promoted as many trials as its promotion budget allows (before this one)."""
        if rung in self._cap:
            return self._promoted[rung] >= self._cap[rung]
        if self._share:
            return self._promoted[rung] >= math.ceil(self._share * (len(self._recorded[rung]) + 1) / self._rf)
        return False

    def on_trial_add(self, tune_controller, trial):
        if self.tail is not None:
            self.tail.added(trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        epoch, value = int(result[self._time_attr]), result[self._metric]
        if self.promote and result.get("status") == "diverged":
            value = math.nan  # a placeholder score: ranked last at the rung
        if trial.trial_id in self.continuing:
            self.continuing[trial.trial_id] = epoch
        if self.tail is None:
            decision = self.decide(trial.trial_id, epoch, value)
            if result.get("status") == "diverged":  # its score is a placeholder: never worth continuing
                self.not_resumable(trial.trial_id)
            return decision
        seconds, status = result.get("time_this_iter_s"), result.get("status")
        if trial.trial_id in self.tail.filling:
            go = self.tail.result(trial.trial_id, epoch, value, seconds, status, filling=True)
            return TrialScheduler.CONTINUE if go and epoch < self._max_t else self.tail.ended(trial.trial_id)
        decision = self.decide(trial.trial_id, epoch, value)
        self.tail.result(trial.trial_id, epoch, value, seconds, status)
        if decision == TrialScheduler.STOP:
            self.tail.ended(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller, trial, result):
        self.continuing.pop(trial.trial_id, None)
        if self.tail is not None:  # (Ray calls this once the result's checkpoint is saved)
            self.tail.ended(trial.trial_id, failed=getattr(trial, "checkpoint", True) is None)

    def on_trial_error(self, tune_controller, trial):
        self.continuing.pop(trial.trial_id, None)
        self.not_resumable(trial.trial_id)
        if self.tail is not None:
            self.tail.ended(trial.trial_id, failed=True)

    def on_trial_remove(self, tune_controller, trial):
        self.continuing.pop(trial.trial_id, None)
        if self.tail is not None:
            self.tail.ended(trial.trial_id)

    def choose_trial_to_run(self, tune_controller):
        """Ray's choice (FIFO), but a trial this scheduler stopped stays stopped: Ray stops a trial only after
        saving its checkpoint, and one whose worker died in between is restarted (TuneController._try_recover
        drops the pending STOP) and would run on. It is ended instead, its searcher told with the result it
        was stopped on (Ray hands a restarted trial's searcher none)."""
        from ray.tune.utils import flatten_dict

        filling = self.tail.filling if self.tail is not None else set()
        trials = list(tune_controller.get_trials())
        for trial in trials:
            if trial.status == "PENDING" and trial.trial_id in self._stopped and trial.trial_id not in filling:
                tune_controller.search_alg.on_trial_complete(trial.trial_id, result=flatten_dict(trial.last_result))
                tune_controller.stop_trial(trial)
        if self.promote and (not self._workers or self._workers > sum(
                t.status == "RUNNING" or (t.status == "PENDING" and t.trial_id in self.continuing) for t in trials)):
            # a paused trial that ranks among its rung's best goes on, on a free worker, before any new trial
            by_id = {t.trial_id: t for t in trials}

            def ready(tid: str) -> bool | None:  # True: continue it; None: not yet ended; False: cannot
                t = by_id.get(tid)
                if t is None or t.status == "ERROR" or (t.status == "TERMINATED" and t.checkpoint is None):
                    return False
                return True if t.status == "TERMINATED" else None

            tid = self.choose_promotion(ready)
            if tid is not None:
                return by_id[tid]
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is not None or self.tail is None or not self.tail.may_fill():
            return chosen
        tid = self.tail.choose(sum(t.status in ("PENDING", "RUNNING") for t in trials))
        if tid is None:
            return None
        trial = next((t for t in trials if t.trial_id == tid), None)
        if trial is None or trial.status != "TERMINATED" or trial.checkpoint is None:
            self.tail.ended(tid, failed=True)  # nothing to continue it from: never a candidate again
            return None
        return trial

    def debug_string(self) -> str:
        return "BudgetedASHA: " + ", ".join(f"rung {r}: {len(v)} recorded, {self._promoted[r]} promoted"
                                           for r, v in self._recorded.items())


class TailFill:
    """Workers that a search of a known number of trials would leave idle at its end continue its best
    stopped trials, from their checkpoints, for as long as fits before its last trial ends.

    Once every trial has started, a search's last trials run on (ASHA promotes some to max_t) while no trial
    is left to start: on 256 workers, 1,024 trials of LCBench left the workers idle for half the search's time
    (tests/bench/replay.py --utilisation). In that tail, a free worker takes the stopped trial that got
    furthest (the highest rung, then the best score there) whose next epoch, and the time a restart takes
    (restart_s), fit before the search's end as the running trials have committed to it: each one's next rung
    (where ASHA may stop it) or max_t, at its own seconds per epoch. A continued trial goes on epoch by epoch
    while the next one fits (the end moves later when ASHA promotes a trial), so the search ends no later for
    it, and may find a better pick; ASHA's rungs never see those epochs (a --resume rebuilds them as they
    were). `clock` is the time in seconds (a replay sets its simulated one)."""

    def __init__(self, asha: BudgetedASHA, num_samples: int, workers: int, clock=time.time):
        self.asha, self.num_samples, self.workers, self.clock = asha, num_samples, workers, clock
        self.added_at: dict[str, float] = {}  # trial -> when it was added
        self.running: set[str] = set()  # trials running as the search's own (not continued ones)
        self.last: dict[str, tuple[int, float, float]] = {}  # trial -> (epoch, best score (signed), time)
        self.seconds: dict[str, tuple[float, int]] = {}  # trial -> (seconds of its epochs, epochs)
        self.filling: dict[str, float | None] = {}  # continued trial -> when it was chosen (None once it ran)
        self.done: set[str] = set()  # at max_t, failed, or nothing to continue from
        self.candidates: set[str] = set()  # stopped trials that may be continued
        self._nothing_fits: tuple[float, float] | None = None  # (end, restart) when no candidate fitted last
        self.restarts: list[float] = []  # how long continued trials took to start their first new epoch
        self.startups: list[float] = []  # how long new trials took to start their first epoch
        self.continued = 0  # continuations started
        self.epochs = 0  # epochs the continuations ran

    def added(self, trial_id: str) -> None:
        self.added_at.setdefault(trial_id, self.clock())
        if trial_id not in self.asha._stopped:
            self.running.add(trial_id)

    @property
    def restart_s(self) -> float:
        """What a restart takes: the median of the last 50 continuations'; until one is measured, of the last 50
        trials' start-ups (from being added to the end of their first epoch, less that epoch); before any, one
        epoch."""
        for measured in (self.restarts, self.startups):
            if measured:
                return float(np.median(measured))
        return self.epoch_s("")

    def epoch_s(self, trial_id: str) -> float:
        total, n = self.seconds.get(trial_id, (0.0, 0))
        if n:
            return total / n
        known = [t / k for t, k in self.seconds.values() if k]
        return float(np.median(known)) if known else 0.0

    def result(self, trial_id: str, epoch: int, value, seconds, status: str | None = None,
               filling: bool = False) -> bool:
        """Record a result; for a continued trial, whether its next epoch still fits before the end."""
        now = self.clock()
        if status == "diverged":  # its score is a placeholder: never worth continuing
            self.done.add(trial_id)
        t, n = self.seconds.get(trial_id, (0.0, 0))
        if seconds is not None:
            self.seconds[trial_id] = (t + float(seconds), n + 1)
        if epoch == 1 and not n and trial_id in self.added_at and not filling:
            self.startups = (self.startups + [max(0.0, now - self.added_at[trial_id] - float(seconds or 0.0))])[-50:]
        v = self.asha._sign * float(value) if value is not None and not math.isnan(float(value)) else -math.inf
        best = max(v, self.last.get(trial_id, (0, -math.inf, 0.0))[1])
        self.last[trial_id] = (epoch, best, now)
        if epoch >= self.asha._max_t:
            self.done.add(trial_id)
            self.candidates.discard(trial_id)
        if not filling:
            return True
        chosen = self.filling[trial_id]
        if chosen is not None:  # its first new epoch: what the restart took (the median of the last 50)
            self.restarts = (self.restarts + [max(0.0, now - chosen - float(seconds or 0.0))])[-50:]
            self.filling[trial_id] = None
            self._nothing_fits = None
        self.epochs += 1
        return now + self.epoch_s(trial_id) <= self.end(now)

    def ended(self, trial_id: str, failed: bool = False) -> str:
        self.running.discard(trial_id)
        self.filling.pop(trial_id, None)
        if failed:
            self.done.add(trial_id)
        if trial_id in self.done or trial_id not in self.asha._stopped or trial_id not in self.last:
            self.candidates.discard(trial_id)
        elif trial_id not in self.candidates:
            self.candidates.add(trial_id)
            self._nothing_fits = None
        return TrialScheduler.STOP

    def end(self, now: float) -> float:
        """When the search's own running trials will have ended at the least: each one's next rung or max_t."""
        rungs, max_t = self.asha._rungs, self.asha._max_t
        end = -math.inf
        for tid in self.running:
            epoch, _, at = self.last.get(tid, (0, 0.0, self.added_at.get(tid, now)))
            upto = next((r for r in rungs if r > epoch), max_t)
            end = max(end, at + (upto - epoch) * self.epoch_s(tid))
        return end

    def may_fill(self) -> bool:
        """Whether the search is in its tail (every trial added, some running) with a trial to continue."""
        return len(self.added_at) >= self.num_samples and bool(self.running) and bool(self.candidates)

    def choose(self, busy: int) -> str | None:
        """The stopped trial a free worker continues now, or None (trials left to start, no worker free, or
        none fits before the end)."""
        if busy >= self.workers or not self.may_fill():
            return None
        now = self.clock()
        end = self.end(now)
        rungs, restart = self.asha._rungs, self.restart_s
        if self._nothing_fits is not None and end <= self._nothing_fits[0] and restart >= self._nothing_fits[1]:
            return None  # no new candidate, an end and a restart no better, a later now: still nothing fits
        best, pick = None, None
        for tid in self.candidates:
            epoch, score, _ = self.last[tid]
            if score == -math.inf or now + restart + self.epoch_s(tid) > end:
                continue
            key = (sum(epoch >= r for r in rungs), score)
            if best is None or key > best:
                best, pick = key, tid
        if pick is None:
            self._nothing_fits = (end, restart)
            return None
        self.candidates.discard(pick)
        self.filling[pick] = now
        self.continued += 1
        return pick


def replay(scheduler: BudgetedASHA, logged: list[dict[str, Any]]) -> dict[str, int]:
    """Feed logged results to an ASHA scheduler in their order, as Ray's controller did; returns each
    trial's epoch of STOP (max_t included)."""
    stopped: dict[str, int] = {}
    for r in logged:
        tid, epoch = r["trial_id"], int(r["epoch"])
        if tid in stopped and scheduler.promote and epoch > stopped[tid] and r.get("status") != "diverged":
            scheduler.resume(tid)  # paused, then promoted: it went on from its checkpoint
            del stopped[tid]
        value = math.nan if scheduler.promote and r.get("status") == "diverged" else r["cmap"]
        if tid not in stopped and scheduler.decide(tid, epoch, value) == TrialScheduler.STOP:
            stopped[tid] = epoch
        if r.get("status") == "diverged":
            scheduler.not_resumable(tid)
    return stopped


class ResumableASHA(BudgetedASHA):
    """birdtune's ASHA whose rungs come back on --resume. Ray's controller never saves or restores a
    scheduler's state (ray-project/ray#30838): a resumed search would start with empty rungs and keep
    trials an uninterrupted one would have stopped. On its first call this one replays the results of the
    search's journal (search.journal), in the order the driver took them; in a new search it is empty."""

    def __init__(self, *, journal: str | None = None, **kw):
        super().__init__(**kw)
        self._journal, self._replayed = journal, False

    def resume_with(self, *, journal: str | None, meter=None) -> None:
        """Where the restored search's journal is now, and this run's budget meter (tuning, on --resume): the
        promoted trials Ray restarts from their checkpoints still count there."""
        self._journal = journal or self._journal
        if meter is not None:
            self.use_budget(meter)

    def _rebuild(self) -> None:
        if not self._replayed:
            self._replayed = True
            if self._journal:
                logged = journal.results(journal.read(self._journal))
                replay(self, logged)
                for r in logged if self.tail is not None else ():  # what each trial reached, for the tail fill
                    self.tail.result(r["trial_id"], int(r["epoch"]), r["cmap"],
                                     (r.get("row") or {}).get("time_this_iter_s"), r.get("status"))
                for tid in self._stopped if self.tail is not None else ():  # stopped before: candidates again
                    self.tail.ended(tid)

    def on_trial_add(self, tune_controller, trial):
        self._rebuild()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._rebuild()
        return super().on_trial_result(tune_controller, trial, result)


def tail_workers(tail_fill: str, workers: int | None) -> int | None:
    """The workers TailFill keeps busy (None: it is off): --tail-fill on, or auto with at least
    TAIL_FILL_AUTO trials at once (with fewer, a search's tail is short beside the restarts it would take)."""
    if tail_fill not in TAIL_FILL:
        raise ValueError(f"unknown --tail-fill '{tail_fill}'; choose {', '.join(TAIL_FILL)}")
    if not workers or tail_fill == "off" or (tail_fill == "auto" and workers < TAIL_FILL_AUTO):
        return None
    return workers


def make_scheduler(kind: str, *, max_t: int, grace_period: int, reduction_factor: int, journal: str | None = None,
                   num_samples: int | None = None, budget: float = ASHA_BUDGET, workers: int | None = None,
                   tail_fill: str = "auto", promote: bool | None = None):
    """ASHA (with its promotion budget when num_samples is given and `budget`; rebuilt from the search's
    journal on --resume; its tail filled on `workers` workers as `tail_fill` says) or FIFO (every trial to
    max_t)."""
    if kind == "asha":
        return ResumableASHA(time_attr=spaces.TIME_ATTR, metric=spaces.METRIC, mode=spaces.MODE, max_t=max_t,
                             grace_period=grace_period, reduction_factor=reduction_factor, journal=journal,
                             num_samples=num_samples, budget=budget,
                             workers=workers, fill_workers=tail_workers(tail_fill, workers), promote=promote)
    if kind == "none":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler '{kind}'; choose {', '.join(SCHEDULERS)}")
