"""What the driver keeps beside Ray's own experiment state while a search runs: the trials the search ended
around, every result in the order it came (for ASHA on --resume), checkpoints repaired after a killed
driver, and a watch on the storage itself."""
from __future__ import annotations

import json
import os
import re
import threading
import time

import pyarrow.fs as pafs
from ray import tune

from search import internals, layout, storage


class CutTrials(tune.Callback):
    """Records the trials still running when the search ends (--time-budget, Ctrl-C) in <exp>/cut_trials.txt:
    Ray marks them TERMINATED like the ones ASHA stopped, and only the driver sees the difference. A cut
    trial that a --resume starts again (Ray restarts the ones Ctrl-C stopped) leaves the file at once: what
    it becomes from then on (stopped early by ASHA, say) is its own."""

    def __init__(self, exp: str, watch: "StorageWatch"):
        self.exp, self.watch = exp, watch
        self.path = storage.join(exp, layout.CUT)
        self.running: set[str] = set()
        self.cut = self._read()

    def _read(self) -> set[str] | None:
        try:
            return set((storage.read_text(self.path) or "").split())
        except OSError:  # read again when needed
            return None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.cut = self.cut if self.cut is not None else self._read()
        if self.cut and trial.trial_id in self.cut:
            self.cut.discard(trial.trial_id)
            self._write(self.cut)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        if self.running:
            self.cut = self.cut if self.cut is not None else self._read()
            if self.cut is not None:  # else the storage is gone: the trials stay unfinished
                self._write(self.cut | self.running)
        if storage.is_uri(self.path):
            self.watch.flush()  # export reads it next

    def _write(self, ids: set[str]) -> None:
        """Local storage at once; a URI in the background (StorageWatch.upload), as a storage that hangs must
        not stop the search's loop."""
        if self.watch.down:
            return
        text = "".join(f"{t}\n" for t in sorted(ids))
        if storage.is_uri(self.path):
            self.watch.upload(self.path, text)
            return
        try:
            storage.write_text(self.path, text)
        except OSError:
            pass


class ResultLog(tune.Callback):
    """Every trial result in the order the driver took it (what ASHA decided on), one JSON line each, in
    <exp>/results_log.jsonl: Ray never saves its schedulers' state (ray-project/ray#30838), and on
    --resume searcher.ResumableASHA rebuilds its rungs from this log. Local storage gets each line at
    once; a URI gets the whole file every `every_s` seconds and at the end."""

    def __init__(self, exp: str, watch: "StorageWatch", every_s: float = 10.0):
        self.path, self.watch, self.every_s = storage.join(exp, layout.RESULTS_LOG), watch, every_s
        self.lines: list[str] | None = None
        self.last_upload = 0.0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        line = json.dumps({"trial_id": trial.trial_id, "epoch": result.get("epoch"), "cmap": result.get("cmap"),
                           "status": result.get("status")}) + "\n"
        if not storage.is_uri(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(line)
            return
        if self.lines is None:  # a resumed search goes on with the log it has
            self.lines = (storage.read_text(self.path) or "").splitlines(keepends=True)
        self.lines.append(line)
        if time.monotonic() - self.last_upload >= self.every_s:
            self._upload()

    def _upload(self) -> None:
        if self.lines is not None:  # in the background: a storage that hangs must not stop the search's loop
            self.watch.upload(self.path, "".join(self.lines))
            self.last_upload = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        if storage.is_uri(self.path):
            self._upload()

    def on_experiment_end(self, trials, **info):
        if storage.is_uri(self.path):
            self._upload()
            self.watch.flush()


class StorageDown(RuntimeError):
    """The search's storage stopped answering."""


# how often a search whose results go to a URI (s3://, gs://, ...) checks that the storage still answers
STORAGE_CHECK_S = float(os.environ.get("BIRDTUNE_STORAGE_CHECK_S", 60))
# what ends the search when its storage stopped answering and its loop, stuck in a call to that storage,
# cannot (search.run sets it: the message, then the process ends as a killed driver would)
last_resort = None


class StorageWatch(tune.Callback):
    """Ends the search when its storage stops answering, instead of letting every trial fail or hang on it:
    the storage is probed (a small file written and removed, seconds) when a trial fails (each attempt) and,
    for a URI, every STORAGE_CHECK_S seconds from a thread of its own, where two failed probes in a row count
    (a trial whose upload hangs may not fail for many minutes, as pyarrow retries). If it does not answer,
    StorageDown aborts the Tuner, as a killed driver would, so that --resume continues every trial from its
    last checkpoint once the storage is back."""

    def __init__(self, exp: str, every_s: float = STORAGE_CHECK_S):
        self.exp, self.every_s = exp, every_s
        self.down = False  # the other records skip the storage once it is known to be gone
        self.problem: str | None = None  # what the periodic probe found
        self._stop = None
        self._pending: dict[str, str] = {}  # path -> newest text to upload
        self._busy = False
        self._cv = threading.Condition()
        self._uploader = None

    def __getstate__(self):  # Ray pickles the run's callbacks with the Tuner: its threads stay behind
        return {"exp": self.exp, "every_s": self.every_s}

    def __setstate__(self, state):
        self.__init__(**state)

    def upload(self, path: str, text: str) -> None:
        """Write `text` to `path` from a thread of its own (a newer text for the same path replaces one
        not yet written); nothing once the storage is known to be gone."""
        if self.down:
            return
        with self._cv:
            self._pending[path] = text
            if self._uploader is None:
                self._uploader = threading.Thread(target=self._upload_loop, name="birdtune-uploads", daemon=True)
                self._uploader.start()
            self._cv.notify_all()

    def _upload_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                path, text = self._pending.popitem()
                self._busy = True
            try:
                storage.write_text(path, text)
            except OSError:  # the storage is gone: the probes say so and end the search
                pass
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every upload asked for is written (True), or `timeout` seconds (default: twice the
        write probe's) pass or the storage is known to be gone (False)."""
        limit = time.monotonic() + (2 * storage.PROBE_TIMEOUT_S if timeout is None else timeout)
        with self._cv:
            while (self._pending or self._busy) and not self.down:
                left = limit - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 1.0))
            return not self.down

    def _check(self) -> None:
        problem = self.problem or storage.check_writable(self.exp)
        if problem:
            self.down = True
            if self._stop is not None:
                self._stop.set()
            raise StorageDown(problem)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            # two probes in a row must fail: one slow answer is not an outage
            problem = storage.check_writable(self.exp) and storage.check_writable(self.exp)
            if problem and not self._stop.is_set():
                self.problem = problem  # the search's loop raises StorageDown at its next step ...
                # ... unless it is stuck in a call to the storage itself: pyarrow holds a lock while any
                # request hangs, and even creating a filesystem object (as Ray does for each new trial) waits
                if not self._stop.wait(max(10.0, 2 * storage.PROBE_TIMEOUT_S)) and last_resort is not None:
                    self.down = True
                    last_resort(problem)
                return

    def on_step_begin(self, iteration, trials, **info):
        if self._stop is None and storage.is_uri(self.exp) and self.every_s > 0:
            self._stop = threading.Event()
            threading.Thread(target=self._watch, name="birdtune-storage-watch", daemon=True).start()
        if self.problem:
            self._check()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check()

    def on_experiment_end(self, trials, **info):
        if self._stop is not None:
            self._stop.set()


class RepairCheckpoints(tune.Callback):
    """A trial about to be restored continues after the checkpoint its last recorded result names: before
    a resumed search starts its trials, and whenever Ray restarts a failed trial (its worker crashed, its
    node was lost). On --resume also a trial whose recorded checkpoint is gone continues from its newest.

    Ray records a result (`train`) and registers its checkpoint in a second call to the trial (`save`): a
    driver stopped in between (Ctrl-C, kill) or a worker or node lost in between leaves the previous
    checkpoint registered, and the trial would run that epoch again (twice in its curve). The checkpoint is
    in storage before its result is sent, so the one the result names is taken (an unnamed newer one is
    not: its epoch would be missing from the curve).

    Ray also deletes a trial's older checkpoints (beyond tuning.KEEP_CHECKPOINTS) as soon as it reports a
    new one, while its experiment state in storage, uploaded in the background, may still name an older
    one. A driver killed in that window leaves a state whose trials would fail to restore ('Could not
    recover from checkpoint as it does not exist on storage anymore'; seen with S3 and one checkpoint
    kept): the named one is taken when still there, else the newest (epochs after the last recorded one
    are then missing from its curve)."""

    def __init__(self):
        self.done = False

    def on_step_begin(self, iteration, trials, **info):
        if self.done:
            return
        self.done = True
        for trial in trials:
            if trial.status not in ("TERMINATED", "ERROR"):
                self._repair(trial, restored=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Ray has set the failed trial PENDING; it restores it from trial.checkpoint when it starts it again
        try:
            self._repair(trial, restored=False)
        except OSError:  # the storage did not answer (StorageWatch, called first, ends the search if it is
            pass  # gone): Ray restores from the checkpoint it registered, as without this callback

    def _repair(self, trial, restored: bool) -> None:
        # Ray offers no public way to change a trial's checkpoints: its manager's records are what
        # TuneController reads to restore it, and what it deletes once newer ones come
        kept = [r for r in internals.checkpoint_results(trial) if _exists(r.checkpoint)]
        gone = trial.checkpoint is not None and not _exists(trial.checkpoint)
        current = None if trial.checkpoint is None or gone else trial.checkpoint
        if restored:
            internals.set_checkpoints(trial, kept)
        # a restored trial's last results are read from storage (what the search shows as done); a live
        # one's from the driver's memory (a URI's result.json is uploaded only now and then)
        newest, named = self._newest(trial, None if restored else dict(trial.last_result or {}))
        if newest is None or not (gone and restored or named and (current is None or _index(newest.checkpoint) > _index(current))):
            return
        internals.set_checkpoints(trial, ([r for r in kept if _index(r.checkpoint) < _index(newest.checkpoint)]
                                          + [newest]), newest, set_latest=True)

    @staticmethod
    def _newest(trial, last: dict | None = None):
        """The checkpoint the trial's last result names (`last`, else the last in its result.json in storage),
        else its newest checkpoint folder; with the result that goes with it, and whether a result named
        it. (None, False) without any."""
        fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        found = dict(sorted((_number(info.path), info.path) for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
                            if _number(info.path) >= 0))
        if not found:
            return None, False
        if last is None:
            rows = []
            try:
                with fs.open_input_stream(f"{folder}/result.json") as f:
                    rows = [json.loads(line) for line in f.readall().decode().splitlines() if line.strip()]
            except OSError:
                pass
            named = [r for r in rows if r.get("checkpoint_dir_name")]
            last = named[-1] if named else {}
        elif not last.get("checkpoint_dir_name"):
            last = {}
        index = int(last["checkpoint_dir_name"].rsplit("_", 1)[1]) if last else None
        is_named = index in found
        if not is_named:
            index, last = max(found), {}
        return internals.training_result(tune.Checkpoint(path=found[index], filesystem=fs),
                                         last or dict(trial.last_result or {})), is_named


def _number(path: str) -> int:
    """The number in a checkpoint folder's name (checkpoint_000003 -> 3; Ray numbers them in order), or -1."""
    m = re.search(r"checkpoint_(\d+)$", str(path).rstrip("/"))
    return int(m.group(1)) if m else -1


def _index(checkpoint) -> int:
    return _number(checkpoint.path)


def _exists(checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound
