"""The one door to Ray's and Optuna's private names: every use of one in birdtune goes through a function
here, each with why the public API does not suffice. tests/test_internals.py checks each against the
installed releases (layout.TESTED_VERSIONS), so an upgrade that removes or renames one breaks CI, not a
user's search.
"""
from __future__ import annotations

from typing import Any

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


def frozen(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of one trial without copying every trial of the study (study.get_trials() would,
    on every reported epoch): through the study's storage, which Optuna keeps private."""
    return study._storage.get_trial(trial_id(trial))


# --- Ray Tune -------------------------------------------------------------------------------------
def set_checkpoints(trial, results: list[Any], latest: Any | None = None, *, set_latest: bool = False) -> None:
    """Replace a restored trial's checkpoint records (search.records.RepairCheckpoints): Ray restores a
    trial from, and later deletes, what its checkpoint manager records, and offers no public way to
    change those records when storage no longer holds a checkpoint they name."""
    manager = trial.run_metadata.checkpoint_manager
    manager._checkpoint_results = list(results)
    if set_latest:
        manager._latest_checkpoint_result = latest


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


def restored_run_config(tuner) -> Any:
    """The RunConfig a restored Tuner will run with: Ray restores the first run's (callbacks, failure
    settings, verbosity) from tuner.pkl and offers no public way to change it on Tuner.restore."""
    return tuner._local_tuner._run_config
