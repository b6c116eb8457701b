"""The search's journal (results_log.jsonl): every trial start, result and end, in the order the driver took
them, written before anything else acts on them. Ray saves its own state only now and then (every 10 s or
more), so a killed driver leaves a state that may miss trials started, results taken and trials ended since;
--resume rebuilds those from here (search.recovery), and ASHA and the searcher rebuild their rungs from it.

One JSON object per line:
    {"event": "start", "trial_id": ..., "trial": [Ray's JSON state of the trial, its run metadata]}
    {"event": "result", "trial_id": ..., "epoch": ..., "cmap": ..., "status": ..., "done": ..., "row": {...}}
    {"event": "end", "trial_id": ..., "status": "TERMINATED" | "ERROR"}
    {"event": "resume", "known": [trial ids Ray restores], ...}      (written by search.recovery)
    {"event": "run", "seconds": ...}            (a search with a budget: this run's time, as its end)
    {"event": "budget-spent", "epochs": ..., "seconds": ...}          (the compute budget ended the search)
Every event the driver takes also has `t`, the time it took it (seconds since the epoch).
`row` is the result exactly as Ray's JSON logger writes it into the trial's result.json. Lines written before
the journal had events are results without `event` or `row`.

The file lives in the experiment folder; with URI storage (s3://...) it is kept on the driver's machine beside
the Optuna study and copied to the bucket every few seconds and at the end (a line must be on disk before the
driver acts on it; a bucket takes whole objects only).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable

from ray import tune

from search import internals, layout, storage

START, RESULT, END, RESUME, RUN, SPENT = "start", "result", "end", "resume", "run", "budget-spent"


def local_path(exp: str, local_dir: str | None) -> str:
    """Where the driver appends the journal: the experiment folder, or `local_dir` for a URI experiment."""
    if storage.is_uri(exp):
        if not local_dir:
            raise ValueError("a URI experiment keeps its journal in a local folder")
        return os.path.join(local_dir, layout.RESULTS_LOG)
    return storage.join(exp, layout.RESULTS_LOG)


def read(path: str) -> list[dict[str, Any]]:
    """Every event of the journal at `path` (a local file or a URI); a torn last line (a write cut off by a
    kill) is left out."""
    return parse((storage.read_text(path) or "").splitlines())


def parse(lines: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """The events of journal lines; a torn line (a write a kill cut off) is left out."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        event.setdefault("event", RESULT)
        out.append(event)
    return out


def results(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result events, in the order the driver took them."""
    return [e for e in events if e["event"] == RESULT]


def continued(events: Iterable[dict[str, Any]]) -> int:
    """How many trials went on from their checkpoints after a result had ended them (ASHA paused them and
    promoted them later, or the tail fill continued them)."""
    stopped, again = set(), set()
    for e in results(events):
        if e["trial_id"] in stopped:
            again.add(e["trial_id"])
        if e.get("done"):
            stopped.add(e["trial_id"])
    return len(again)


def ended(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """trial id -> Ray status of each trial the journal knows has ended: an end event, or a result that ended
    it (ASHA's STOP or its last epoch: Ray marks such a result done before it stops the trial)."""
    out: dict[str, str] = {}
    for e in events:
        if e["event"] == END:
            out[e["trial_id"]] = e["status"]
        elif e["event"] == RESULT:
            if e.get("done"):
                out[e["trial_id"]] = "TERMINATED"
            else:  # running (again: an errored trial a --resume restarted)
                out.pop(e["trial_id"], None)
    return out


def known_trials(events: list[dict[str, Any]]) -> list[str] | None:
    """The trials the last --resume restored (search.recovery's record), or None before any resume."""
    resumes = [e for e in events if e["event"] == RESUME]
    return list(resumes[-1]["known"]) if resumes else None


class Journal(tune.Callback):
    """Appends the journal's events as Ray's controller takes them. Each line is one write to a file opened for
    appending and flushed at once (a killed driver leaves every line it wrote); with URI storage the local
    file goes to the bucket every `every_s` seconds, when a trial ends and at the end, in the background
    (StorageWatch.upload: a storage that hangs must not stop the search's loop)."""

    def __init__(self, path: str, exp: str, watch, every_s: float = 10.0, meter=None):
        self.path, self.exp, self.watch, self.every_s, self.meter = path, exp, watch, every_s, meter
        self.remote = storage.join(exp, layout.RESULTS_LOG) if storage.is_uri(exp) else None
        self._fd: int | None = None
        self._started: set[str] | None = None
        self._last_upload = 0.0

    def __getstate__(self):  # Ray pickles the run's callbacks with the Tuner: the open file stays behind
        return {"path": self.path, "exp": self.exp, "watch": self.watch, "every_s": self.every_s, "meter": self.meter}

    def __setstate__(self, state):
        self.__init__(**state)

    # --- writing ---------------------------------------------------------------------------------
    def write(self, event: dict[str, Any]) -> None:
        """One event, with the time it was taken (`t`, seconds since the epoch: the budget counts a run's time)."""
        if self._fd is None:
            self._fd = open_for_append(self.path)
        write_line(self._fd, {**event, "t": round(time.time(), 3)})

    def _upload(self) -> None:
        if self.remote:
            try:
                with open(self.path) as fh:
                    text = fh.read()
            except OSError:
                return
            self.watch.upload(self.remote, text)
            self._last_upload = time.monotonic()

    # --- Ray's callbacks -------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        if self._started is None:
            self._started = {e["trial_id"] for e in read(self.path) if e["event"] == START} \
                if os.path.exists(self.path) else set()
        if trial.trial_id in self._started:  # restarted from a checkpoint: Ray has its state
            return
        if not self._started:
            wait_for_first_state(self.exp)
        self._started.add(trial.trial_id)
        self.write({"event": START, "trial_id": trial.trial_id, "trial": list(internals.trial_state(trial))})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.write({"event": RESULT, "trial_id": trial.trial_id, "epoch": result.get("epoch"),
                    "cmap": result.get("cmap"), "status": result.get("status"), "done": bool(result.get("done")),
                    "row": result})
        if self.remote and time.monotonic() - self._last_upload >= self.every_s:
            self._upload()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.write({"event": END, "trial_id": trial.trial_id, "status": "TERMINATED"})
        self._upload()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.write({"event": END, "trial_id": trial.trial_id, "status": "ERROR"})
        self._upload()

    def on_experiment_end(self, trials, **info):
        if self.meter is not None:
            self.write({"event": RUN, "seconds": round(self.meter.this_run(), 3)})
            if self.meter.exhausted():
                spent = self.meter.spent()
                self.write({"event": SPENT, "epochs": spent.epochs, "seconds": round(spent.seconds, 1)})
        if self.remote:
            self._upload()
            self.watch.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_for_append(path: str) -> int:
    """The journal opened for appending; a line cut off by a kill is ended first, so the next starts on its own."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    size = os.fstat(fd).st_size
    if size:
        with open(path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                os.write(fd, b"\n")
    return fd


def write_line(fd: int, event: dict[str, Any]) -> None:
    data = (json.dumps(event, cls=internals.result_encoder()) + "\n").encode()
    while data:  # one write for a line, unless the OS takes it in parts
        data = data[os.write(fd, data):]


def append(path: str, event: dict[str, Any]) -> None:
    """One event added to the journal at `path` (search.recovery's record of a resume)."""
    fd = open_for_append(path)
    try:
        write_line(fd, event)
    finally:
        os.close(fd)


def wait_for_first_state(exp: str, timeout: float = 60.0) -> None:
    """Hold the search's first trial until Ray's first saved state is in storage (Ray uploads it in the
    background, a moment after the first step): a driver killed before then leaves no state to restore,
    and --resume can start the search afresh only if no trial has run."""
    deadline = time.monotonic() + timeout
    while not internals.has_saved_state(exp) and time.monotonic() < deadline:
        time.sleep(0.05)
