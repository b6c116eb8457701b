"""What the driver prints while a search runs, instead of Ray's tables.

On a terminal: a compact block redrawn in place (trials running / stopped early / completed / errored,
the best cmAP so far with its config, elapsed time, an estimate of the time left, the dashboard URL),
with one line above it per finished trial. Elsewhere (CI, a log file): only those lines, no escapes.
"""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ray import tune

import spaces
from search import layout
from search.tables import never_ran, trial_number, trial_status


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class LiveView(tune.Callback):
    REDRAW_S = 1.0

    def __init__(self, max_t: int, total: int | None, searched: list[str], dashboard: str | None = None,
                 out: TextIO | None = None, tty: bool | None = None, clock=time.time, first_number: int = 1,
                 meter=None):
        self.max_t, self.total, self.searched, self.dashboard = max_t, total, searched, dashboard
        self.meter = meter  # the budget's (search.budget.Meter), when the search has one
        self.first_number = first_number  # Ray's trial counter at trial_index 0 (see SearchSpec.first_trial_number)
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.clock = clock
        self.t0 = clock()
        self.counts = {s: 0 for s in layout.STATUSES}
        self.running: dict[str, Any] = {}  # trial_id -> trial
        self.epoch: dict[str, int] = {}  # trial_id -> last epoch reported
        self.trial_best: dict[str, float] = {}
        self.best: tuple[float, int | str, int, dict[str, Any]] | None = None  # cmap, trial index, epoch, config
        self.finished = 0
        self.ended: dict[str, str] = {}  # trial_id -> the status it ended with (a continued trial ends again)
        self.continued = 0  # trials continued from their checkpoints (ASHA's promotions, or search.scheduler.TailFill)
        self.restored: set[str] = set()  # ended before this run (a --resume may start a cut one again)
        self._drawn = 0  # lines of the block on screen
        self._seen_restored = False
        self.restored_empty: set[str] = set()  # restored ended trials that reported nothing (cut earlier)
        self._last_draw = 0.0

    # --- Tune callbacks ------------------------------------------------------------------------
    def index(self, trial) -> int | str:
        """The trial's trial_index, as in trials.csv (Ray's id where its tag has no counter)."""
        number = trial_number(trial)
        return number - self.first_number if number is not None else trial.trial_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = trial
        self.epoch.setdefault(trial.trial_id, 0)
        if trial.trial_id in self.ended and trial.trial_id not in self.restored:
            # ended in this run, and started again from its checkpoint: with a budget, ASHA promoted it from
            # the rung it was paused at; else the tail fill continues it
            self.continued += 1
            why = ("promoted: among the best of its rung" if self.meter is not None and self.total is None
                   else "on a worker the search's tail left idle")
            self._line(f"trial {self.index(trial):>3} continued from epoch {self.epoch[trial.trial_id]} {why}")
        self._redraw(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epoch[trial.trial_id] = int(result.get(spaces.TIME_ATTR, 0))
        value = result.get(spaces.METRIC)
        if value is None or result.get("status") == "diverged":
            return
        self.trial_best[trial.trial_id] = max(self.trial_best.get(trial.trial_id, float("-inf")), value)
        if self.best is None or value > self.best[0]:
            config = {k: trial.config[k] for k in self.searched if k in trial.config}
            self.best = (float(value), self.index(trial), int(result.get(spaces.TIME_ATTR, 0)), config)
        self._redraw()

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epoch = self.epoch[trial.trial_id] = int(last.get(spaces.TIME_ATTR, 0))
        # called when the trial returned or ASHA stopped it; the ones the search ends around come last
        status = trial_status("TERMINATED", epoch, self.max_t, last.get("status") == "diverged")
        how = {layout.DIVERGED: f"diverged at epoch {epoch}", layout.COMPLETED: f"completed {epoch} epochs",
               layout.STOPPED_EARLY: f"stopped early at epoch {epoch}"}[status]
        self._finish(trial, status, how)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, layout.ERRORED, "errored")

    def on_step_begin(self, iteration, trials, **info):
        if not self._seen_restored:  # a resumed search: what finished before counts, without lines
            self._seen_restored = True
            self.restored_empty = never_ran(t for t in trials if t.status == "TERMINATED")
            for trial in trials:
                if trial.status in ("TERMINATED", "ERROR"):
                    last = trial.last_result or {}
                    epoch = int(last.get(spaces.TIME_ATTR, 0))
                    status = (layout.ERRORED if trial.status == "ERROR" else
                              trial_status("TERMINATED", epoch, self.max_t, last.get("status") == "diverged"))
                    self.counts[status] += 1
                    self.ended[trial.trial_id] = status
                    self.restored.add(trial.trial_id)
                    self.epoch[trial.trial_id] = epoch
                    self.finished += 1

    def on_step_end(self, iteration, trials, **info):
        self._redraw()

    def on_experiment_end(self, trials, **info):
        # cut by --time-budget or an interruption: running, or waiting for their worker
        waiting = never_ran(trials) - set(self.running) - self.restored_empty
        waiting = [t for t in trials if t.trial_id in waiting]
        for trial in list(self.running.values()) + waiting:
            self._finish(trial, layout.UNFINISHED, f"unfinished at epoch {self.epoch.get(trial.trial_id, 0)}")
        self._redraw(force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()
        self._drawn = 0

    # --- drawing -------------------------------------------------------------------------------
    def _finish(self, trial, status: str, how: str) -> None:
        self.running.pop(trial.trial_id, None)
        restored = trial.trial_id in self.restored
        self.restored.discard(trial.trial_id)
        before = self.ended.get(trial.trial_id)
        if before is not None:  # a continued (or a restored, restarted) trial: it counts once, as it ends now
            self.counts[before] -= 1
            if not restored:
                how = how.replace("stopped early", "stopped again").replace("completed", "continued to")
        else:
            self.finished += 1
        self.counts[status] += 1
        self.ended[trial.trial_id] = status
        mine = self.trial_best.get(trial.trial_id, float("nan"))
        best = f"{self.best[0]:.4f} (trial {self.best[1]})" if self.best else "nan"
        self._line(f"{self._done()} trial {self.index(trial):>3} {how:<26} its best cmap {mine:.4f} | "
                   f"best so far {best}")

    def _line(self, text: str) -> None:
        line = f"[{duration(self.clock() - self.t0):>6}] {text}"
        self._clear()
        self.out.write(line + "\n")
        self.out.flush()
        self._redraw(force=True)

    def _done(self) -> str:
        return f"{self.finished:>3}/{self.total}" if self.total else f"{self.finished:>3}"

    def eta(self) -> float | None:
        """Seconds left: from the pace of finished trials so far, or of the budget spent in this run; None
        before there is a pace."""
        elapsed = self.clock() - self.t0
        left = []
        if self.total and self.finished:
            left.append((self.total - self.finished) * elapsed / self.finished)
        b = self.meter.budget if self.meter is not None else None
        if b is not None and b.seconds is not None:
            left.append(b.seconds - self.meter.seconds())
        if b is not None and b.epochs is not None and self.meter.epochs > self.meter.before.epochs:
            left.append((b.epochs - self.meter.epochs) * elapsed / (self.meter.epochs - self.meter.before.epochs))
        return max(0.0, min(left)) if left else None

    def block(self) -> list[str]:
        elapsed = self.clock() - self.t0
        eta = self.eta()
        c = self.counts
        spent = (f" | budget spent {self.meter.spent().describe(self.meter.budget)}" if self.meter is not None else "")
        lines = [f"birdtune  {self._done().strip()} trials done | running {len(self.running)} | "
                 f"stopped early {c['stopped_early']} | completed {c['completed']} | errored {c['errored']}"
                 + (f" | diverged {c['diverged']}" if c["diverged"] else "")
                 + (f" | unfinished {c['unfinished']}" if c["unfinished"] else "")
                 + f" | elapsed {duration(elapsed)} | left " + (f"~{duration(eta)}" if eta is not None else "?")
                 + spent]
        if self.best:
            value, index, epoch, config = self.best
            lines.append(f"best cmap so far {value:.4f} (trial {index}, epoch {epoch}): "
                         + " ".join(f"{k}={_value(v)}" for k, v in config.items()))
        else:
            lines.append("best cmap: no epoch finished yet")
        if self.dashboard:
            lines.append(f"dashboard {self.dashboard}  (sign in with the token from `ray get-auth-token`)")
        return lines

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # to the block's first line, erase to the end
            self._drawn = 0

    def _redraw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = self.clock()
        if not force and now - self._last_draw < self.REDRAW_S:
            return
        self._clear()
        lines = self.block()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn, self._last_draw = len(lines), now

