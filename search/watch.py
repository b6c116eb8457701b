"""The watch on a search's storage: ends the search when the storage stops answering (rather than every trial
failing or hanging on it), and uploads the driver's small files to a URI from a thread of its own."""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from ray import tune

from search import storage


class StorageDown(RuntimeError):
    """The search's storage stopped answering."""


# how often a search whose results go to a URI (s3://, gs://, ...) checks that the storage still answers
STORAGE_CHECK_S = float(os.environ.get("BIRDTUNE_STORAGE_CHECK_S", 60))


class StorageWatch(tune.Callback):
    """Ends the search when its storage stops answering, instead of letting every trial fail or hang on it:
    the storage is probed (a small file written and removed, seconds) when a trial fails (each attempt) and,
    for a URI, every STORAGE_CHECK_S seconds from a thread of its own, where two failed probes in a row count
    (a trial whose upload hangs may not fail for many minutes, as pyarrow retries). If it does not answer,
    StorageDown aborts the Tuner, as a killed driver would, so that --resume continues every trial from its
    last checkpoint once the storage is back."""

    def __init__(self, exp: str, every_s: float = STORAGE_CHECK_S, on_lost: Callable[[str], None] | None = None):
        self.exp, self.every_s = exp, every_s
        # what ends the search when its loop, stuck in a call to the storage, cannot (search.run passes it:
        # the message, then the process ends as a killed driver would)
        self.on_lost = on_lost
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
                if not self._stop.wait(max(10.0, 2 * storage.PROBE_TIMEOUT_S)) and self.on_lost is not None:
                    self.down = True
                    self.on_lost(problem)
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
