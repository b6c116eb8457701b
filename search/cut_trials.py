"""The trials a search ended around (cut_trials.txt): still running when the search stopped (--time-budget,
Ctrl-C), which Ray marks TERMINATED like the ones ASHA stopped."""
from __future__ import annotations

from ray import tune

from search import layout, storage
from search.tables import never_ran
from search.watch import StorageWatch


class CutTrials(tune.Callback):
    """Records the trials still running when the search ends (--time-budget, Ctrl-C) in <exp>/cut_trials.txt:
    Ray marks them TERMINATED like the ones ASHA stopped, and only the driver sees the difference. A cut
    trial that a --resume starts again (Ray restarts the ones Ctrl-C stopped) leaves the file at once: what
    it becomes from then on (stopped early by ASHA, say) is its own."""

    def __init__(self, exp: str, watch: StorageWatch):
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

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("done"):  # it has ended (ASHA's stop, its last epoch); Ray stops it a moment later
            self.running.discard(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        ended_around = self.running | never_ran(trials)
        if ended_around - (self.cut or set()):
            self.cut = self.cut if self.cut is not None else self._read()
            if self.cut is not None:  # else the storage is gone: the trials stay unfinished
                self._write(self.cut | ended_around)
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
