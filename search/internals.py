"""The one door to Ray's and Optuna's private names: every use of one in birdtune goes through a function
here, each with why the public API does not suffice. tests/test_internals.py checks each against the
installed releases (layout.TESTED_VERSIONS), so an upgrade that removes or renames one breaks CI, not a
user's search.
"""
from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import optuna

# --- Ray's OptunaSearch --------------------------------------------------------------------------
# birdtune's searchers subclass ray.tune.search.optuna.OptunaSearch to tell Optuna what ASHA did (PRUNED,
# FAIL, intermediate values); OptunaSearch keeps its study and its Tune-trial -> Optuna-trial map in
# attributes it offers no accessor for.


def ot_trials(searcher) -> dict[str, optuna.Trial]:
    """Tune trial id -> the Optuna trial OptunaSearch asked for it (read and extended: a restored
    searcher adopts trials a killed driver had asked for)."""
    return searcher._ot_trials


def ot_study(searcher) -> optuna.Study:
    return searcher._ot_study


def completed(searcher) -> set[str]:
    """Tune trial ids OptunaSearch has told Optuna about (its guard against telling twice)."""
    return searcher._completed_trials


def define_space(searcher, trial: optuna.Trial) -> None:
    """Suggest the search space on `trial` with OptunaSearch's own define-by-run function (the rung models
    of mftpe must sample exactly the space the study samples)."""
    searcher._space(trial)


def reopen_study(searcher, storage: optuna.storages.BaseStorage) -> None:
    """Point a restored OptunaSearch at the study in `storage` (a moved results folder, or the local copy
    of a bucket's study): OptunaSearch.restore unpickles its study with the storage path of the first run,
    and has no public way to load it from elsewhere. Its Optuna trials are re-bound to the new study."""
    searcher._storage = storage
    searcher._ot_study = optuna.load_study(study_name=searcher._study_name, storage=storage,
                                           sampler=searcher._sampler)
    searcher._ot_trials = {tid: bind_trial(searcher._ot_study, trial_id(t)) for tid, t in searcher._ot_trials.items()}


# --- Optuna ---------------------------------------------------------------------------------------
def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial: Optuna's public `number` counts within a study, while the storage
    (and optuna.Trial's constructor) take the storage-wide id, which Optuna exposes only as `_trial_id`."""
    return trial._trial_id


def bind_trial(study: optuna.Study, storage_trial_id: int) -> optuna.Trial:
    """A live optuna.Trial for a trial already in the study (one asked for before a driver restart):
    Optuna's ask() only creates new trials, so the constructor is the one way to take over an existing
    RUNNING trial (its docs call it not recommended, not private)."""
    return optuna.Trial(study, storage_trial_id)


def add_running_trial(study: optuna.Study, params: dict, distributions: dict, user_attrs: dict) -> int:
    """Add a RUNNING trial with these params to the study and return its storage id (a live optuna.Trial
    comes from bind_trial): study.ask() would take over an enqueued trial instead, and add_trial() returns
    no id. Through the study's storage, which Optuna keeps private."""
    import datetime

    template = optuna.trial.FrozenTrial(
        number=-1, state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(),
        datetime_complete=None, params=params, distributions=distributions, user_attrs=user_attrs,
        system_attrs={}, intermediate_values={}, trial_id=-1)
    return study._storage.create_new_trial(study._study_id, template_trial=template)


def frozen(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of one trial without copying every trial of the study (study.get_trials() would,
    on every reported epoch): through the study's storage, which Optuna keeps private."""
    return study._storage.get_trial(trial_id(trial))


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None, state=None) -> None:
    """study.tell without the deep copy of the told trial it returns (every epoch's value: about a tenth of a
    replayed search's time, which birdtune never reads). Optuna's tell is this call and that copy."""
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state, skip_if_finished=False)


class _KeptSignatures:
    """The `inspect` module for Ray's optuna_search module (its one use: the signature of each suggest_* method,
    at every call): signature() computed once per function (a bound method's by its function), the rest inspect's."""

    def __init__(self):
        self._signatures: dict[tuple[Any, bool], Any] = {}

    def signature(self, func):
        key = (getattr(func, "__func__", func), inspect.ismethod(func))
        if key not in self._signatures:
            self._signatures[key] = inspect.signature(func)
        return self._signatures[key]

    def __getattr__(self, name: str):
        return getattr(inspect, name)


_ORIGINALS: dict[str, Any] = {}  # what fast_suggestions replaced, to put back (tests, tests/bench/tpe_speed.py)


def fast_suggestions(enable: bool = True) -> None:
    """The same suggestions, sooner: three functions a suggestion runs, replaced once in this process (or, with
    enable=False, put back). Neither Optuna nor Ray offers a hook for them; each is looked up at each call.

    - Optuna 5's TPE computes log Phi(x) one element at a time in Python (_truncnorm._log_ndtr, through
      np.frompyfunc): about a quarter of a suggestion's time with a few hundred trials, which a budgeted search
      or a 1,000-trial one pays on every trial. SciPy's log_ndtr (SciPy comes with scikit-learn) computes the
      same function vectorised, about 8x faster, equal to it within 1e-12 (and closer to the true value above
      x = 6, where Optuna's uses -Phi(-x)).
    - Its Phi(x) (_truncnorm._ndtr) is 0.5 + 0.5 erf(x / sqrt 2) with erf as numpy polynomials, piece by
      piece: the same formula with SciPy's erf, equal within 1e-15.
    - Ray's OptunaSearch wraps each suggest_* call of a define-by-run space to capture its value, and computes
      the method's signature anew at every call (_OptunaTrialSuggestCaptor._get_wrapper, through its module's
      `inspect`): Ray's wrapper still runs, with an `inspect` that computes each method's signature once."""
    from optuna.samplers._tpe import _truncnorm
    from ray.tune.search.optuna import optuna_search
    from scipy.special import erf, log_ndtr

    if not _ORIGINALS:
        _ORIGINALS.update(log_ndtr=_truncnorm._log_ndtr, ndtr=_truncnorm._ndtr, inspect=optuna_search.inspect)
    if not enable:
        _truncnorm._log_ndtr, _truncnorm._ndtr = _ORIGINALS["log_ndtr"], _ORIGINALS["ndtr"]
        optuna_search.inspect = _ORIGINALS["inspect"]
        return
    if getattr(_truncnorm._log_ndtr, "birdtune", False):
        return

    def _log_ndtr(a):
        return log_ndtr(np.asarray(a, dtype=float))

    def _ndtr(a):
        return 0.5 + 0.5 * erf(np.asarray(a, dtype=float) / 2**0.5)

    _log_ndtr.birdtune = True
    _truncnorm._log_ndtr, _truncnorm._ndtr, optuna_search.inspect = _log_ndtr, _ndtr, _KeptSignatures()


# --- Ray Tune -------------------------------------------------------------------------------------
def set_checkpoints(trial, results: list[Any], latest: Any | None = None, *, set_latest: bool = False,
                    index: int | None = None) -> None:
    """Replace a restored trial's checkpoint records (search.recovery): Ray restores a
    trial from, and later deletes, what its checkpoint manager records, and offers no public way to
    change those records when storage no longer holds a checkpoint they name. With `index` (the number of
    the checkpoint it continues from) the trial's next checkpoint is numbered after it: Ray keeps that count
    in the trial's storage context and hands it to the trial when it starts, and a count left behind made the
    trial write its next checkpoint over one it may be restored from again."""
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_results = list(results)
    if set_latest:
        manager._latest_checkpoint_result = latest
    if index is not None:
        trial.storage.current_checkpoint_index = index
        trial.invalidate_json_state()


def checkpoint_results(trial) -> list[Any]:
    return list(trial.run_metadata.checkpoint_manager._checkpoint_results)


def training_result(checkpoint, metrics: dict) -> Any:
    """The record Ray's checkpoint manager keeps per checkpoint (ray.train._internal.session._TrainingResult):
    needed to hand it a checkpoint found in storage."""
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult(checkpoint=checkpoint, metrics=metrics)


def experiment_state_manager() -> type:
    """Ray's class that saves and uploads an experiment's state (wait_for_upload_before_save makes its
    next save wait for the last upload; Ray has no setting for that)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    return _ExperimentCheckpointManager


def upload_due(manager, force: bool) -> bool:
    """Whether the manager's next sync_up_experiment_state will save and upload (Ray's own condition)."""
    import time

    return force or manager._should_force_sync_up or \
        time.monotonic() - manager._last_save_time >= manager._checkpoint_period


def wait_for_upload(manager) -> None:
    manager._storage.syncer.wait()


def wait_for_upload_before_save() -> None:
    """Patch the experiment state manager's sync_up_experiment_state (once per process) so that a save
    first waits for the upload still running (search.tuning.upload_before_rewrite says why): Ray has no
    setting for it, and the method is the only place both the save and the upload are known."""
    manager_cls = experiment_state_manager()
    if getattr(manager_cls.sync_up_experiment_state, "_birdtune", False):
        return
    original = manager_cls.sync_up_experiment_state

    def sync_up_experiment_state(self, save_fn, force=False, wait=False):
        if upload_due(self, force):  # a save is coming (Ray's own condition): let the last upload end
            try:
                wait_for_upload(self)
            except Exception:  # that upload failed: the one this save starts copies every file again
                pass
        return original(self, save_fn, force=force, wait=wait)

    sync_up_experiment_state._birdtune = True
    manager_cls.sync_up_experiment_state = sync_up_experiment_state


def restored_search(tuner) -> tuple[Any, Any]:
    """The searcher and scheduler a restored Tuner will run with (Ray unpickles them from tuner.pkl and
    offers no public way to reach them before fit(), which restores their state)."""
    config = tuner._local_tuner._tune_config
    return config.search_alg, config.scheduler


def restored_run_config(tuner) -> Any:
    """The RunConfig a restored Tuner will run with: Ray restores the first run's (callbacks, failure
    settings, verbosity) from tuner.pkl and offers no public way to change it on Tuner.restore."""
    return tuner._local_tuner._run_config


# --- Ray Tune's saved experiment state (search.recovery brings it up to the journal on --resume) ----------
# Ray saves an experiment's state (its trials, the search generator's counter, the searcher) every 10 s or
# more, in files whose format it documents nowhere; --resume has to bring them up to what the driver did
# since, and the only way to make Ray restore that is to hand it those files.
STATE_PREFIX, GENERATOR_PREFIX, SEARCHER_PREFIX = "experiment_state-", "search_gen_state-", "searcher-state-"


def result_encoder() -> type:
    """The JSON encoder Ray's JsonLoggerCallback writes result.json with (numpy values, anything else as text)."""
    from ray.tune.utils.util import SafeFallbackEncoder

    return SafeFallbackEncoder


def trial_state(trial) -> tuple[str, str]:
    """A trial as Ray's experiment state stores it: (its JSON state, its run metadata's)."""
    return trial.get_json_state()


def trial_from_state(state: str, run_metadata: str | None = None):
    """The Trial object of a stored state (not yet bound to a registered trainable)."""
    from ray.tune.experiment import Trial

    trial = Trial.from_json_state(state, stub=True)
    trial.stub = False  # from_json_state(stub=True) marks it so; the state written back must not say it
    if run_metadata is not None:
        trial.restore_run_metadata(run_metadata)
    return trial


def last_result(trial) -> dict:
    """The trial's last recorded result (Trial.last_result would ask the trial's actor for a default one)."""
    return trial.run_metadata.last_result


def set_last_result(trial, result: dict) -> None:
    trial.run_metadata.last_result = dict(result)
    trial.invalidate_json_state()


def relocate(trial, exp: str) -> None:
    """Point a stored trial at the experiment's current place (it may have moved), as Ray's restore does."""
    import copy
    import posixpath

    from ray.train._internal.storage import get_fs_and_path

    fs, fs_path = get_fs_and_path(exp)
    new = copy.copy(trial.storage)
    new.storage_filesystem = fs
    new.storage_fs_path, new.experiment_dir_name = posixpath.split(fs_path.rstrip("/"))
    trial.set_storage(new)


def saved_sessions(names: list[str]) -> list[str]:
    """The session stamps of the experiment's saved states, newest last (Ray restores the newest: the
    largest file name)."""
    return sorted(n[len(STATE_PREFIX):-len(".json")] for n in names
                  if n.startswith(STATE_PREFIX) and n.endswith(".json"))


def is_saved_state(names: list[str]) -> bool:
    """Whether these file names hold Ray's whole saved state: the experiment's, the search generator's and,
    under a SearchGenerator, its searcher's (Ray writes and uploads them together; a driver killed during
    its first upload may leave only some)."""
    has = lambda prefix: any(n.startswith(prefix) for n in names)  # noqa: E731
    return has(STATE_PREFIX) and (has("basic-variant-state-") or has(GENERATOR_PREFIX) and has(SEARCHER_PREFIX))


def has_saved_state(exp: str) -> bool:
    """Whether Ray's whole saved state is in the experiment's storage (False also when it does not answer)."""
    from search import storage

    try:
        return is_saved_state(storage.listdir(exp))
    except OSError:
        return False


def load_experiment_state(data: bytes) -> dict:
    """An experiment_state-*.json as plain JSON: its pickled values stay encoded, so it is written back as read."""
    import json

    return json.loads(data)


def use_this_runs_stopper(state: dict) -> None:
    """Drop the stopper saved in an experiment state: Ray restores the controller's fields from the state
    (TuneController.__setstate__), its stopper among them, over the one the resumed run passes; a budget's
    stopper saved seconds before a kill had missed what was spent since (search.budget counts it from the
    journal)."""
    state["runner_data"].pop("_stopper", None)


def load_generator_state(data: bytes) -> dict:
    """A search_gen_state-*.json (Ray's SearchGenerator and ConcurrencyLimiter state; a cloudpickle, in spite
    of its name)."""
    import ray.cloudpickle as cloudpickle

    return cloudpickle.loads(data)


def dump_generator_state(state: dict) -> bytes:
    import ray.cloudpickle as cloudpickle

    return cloudpickle.dumps(state)


def fix_generator_state(state: dict, created: int, live: set[str]) -> None:
    """Make the search generator count `created` trials (those Ray restores) and its concurrency limiter hold
    `live` as running: the saved state may have missed trials created since, or, saved a moment after the
    experiment's state (a driver killed during the upload), count one that Ray will not restore; and trials
    it holds as running may have ended since."""
    state["counter"] = created
    limiter = state.get("name:ConcurrencyLimiter")
    if limiter is not None:
        limiter["live_trials"] = set(live)
        limiter["num_unfinished_live_trials"] = len(live)


def atomic_local_uploads() -> None:
    """Make Ray's uploads of the driver's files (experiment state, searcher state, trials' result.json) to
    a local or NFS storage path write each file under a temporary name and rename it: Ray copies over the
    files in place, so a driver killed during a copy left a truncated experiment state that no --resume could
    read. (S3 and other object stores replace whole objects already.) Patched once per process."""
    import fnmatch
    import shutil

    import pyarrow.fs as pafs
    from ray.train._internal import storage as ray_storage

    syncer = ray_storage._FilesystemSyncer
    if getattr(syncer._sync_up_command, "_birdtune", False):
        return
    original = syncer._sync_up_command

    def upload(local_path: str, fs_path: str, exclude: list | None = None) -> None:
        if os.path.isfile(local_path):
            pairs = [(local_path, fs_path)]
        else:
            pairs = []
            for root, _, files in os.walk(local_path):
                for name in files:
                    src = os.path.join(root, name)
                    rel = os.path.relpath(src, local_path)
                    if exclude and any(fnmatch.fnmatch(rel, pat) for pat in exclude):
                        continue
                    pairs.append((src, os.path.join(fs_path, rel)))
        for src, dst in pairs:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            tmp = f"{dst}.birdtune-tmp-{os.getpid()}"
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            except FileNotFoundError:  # a file Ray removed while copying (an older checkpoint)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _sync_up_command(self, local_path, uri, exclude=None):
        if isinstance(self.storage_filesystem, pafs.LocalFileSystem):
            return upload, dict(local_path=local_path, fs_path=uri, exclude=exclude)
        return original(self, local_path, uri, exclude)

    _sync_up_command._birdtune = True
    syncer._sync_up_command = _sync_up_command
