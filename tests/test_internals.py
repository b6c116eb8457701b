"""Contract tests of search.internals: every private Ray or Optuna name birdtune uses exists in the
installed releases and does what birdtune relies on. A release that drops or changes one fails here."""
from __future__ import annotations

import inspect
import shutil

import optuna
import pytest
from optuna.trial import TrialState

from search import internals
from search.searcher import sqlite_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)


@pytest.fixture
def searcher(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    s = OptunaSearch(space=_space, metric="cmap", mode="max", storage=sqlite_storage(str(tmp_path / "a.db")),
                     study_name="s", seed=0)
    assert s.suggest("t1") is not None and s.suggest("t2") is not None
    return s


def test_optuna_search_keeps_its_study_and_trials_where_birdtune_reads_them(searcher):
    trials, study = internals.ot_trials(searcher), internals.ot_study(searcher)
    assert isinstance(study, optuna.Study) and set(trials) == {"t1", "t2"}
    assert all(isinstance(t, optuna.Trial) for t in trials.values())
    t1 = trials["t1"]
    t1.report(0.5, 1)
    stored = internals.frozen(study, t1)
    assert stored.state == TrialState.RUNNING and stored.intermediate_values == {1: 0.5}
    assert set(stored.params) == {"lr"} and 1e-4 <= stored.params["lr"] <= 1e-1
    searcher.on_trial_complete("t2", {"cmap": 0.7})
    assert internals.completed(searcher) == {"t2"}  # OptunaSearch's guard against telling twice
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    internals.define_space(searcher, probe)
    assert set(probe.params) == {"lr"}


def test_storage_ids_bind_a_live_trial_to_a_running_one(searcher):
    study = internals.ot_study(searcher)
    t1 = internals.ot_trials(searcher)["t1"]
    stored = study.get_trials(deepcopy=False)[t1.number]
    assert internals.trial_id(stored) == internals.trial_id(t1) and isinstance(internals.trial_id(t1), int)
    again = internals.bind_trial(study, internals.trial_id(t1))
    again.report(0.25, 2)
    study.tell(again, 0.9)
    assert internals.frozen(study, t1).state == TrialState.COMPLETE and internals.frozen(study, t1).value == 0.9


def test_a_restored_searcher_reopens_its_study_elsewhere(searcher, tmp_path):
    internals.ot_trials(searcher)["t1"].report(0.5, 1)
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    internals.reopen_study(searcher, sqlite_storage(str(tmp_path / "b.db")))
    study = internals.ot_study(searcher)
    t1 = internals.ot_trials(searcher)["t1"]
    t1.report(0.6, 2)
    assert internals.frozen(study, t1).intermediate_values == {1: 0.5, 2: 0.6}
    moved = optuna.load_study(study_name="s", storage=sqlite_storage(str(tmp_path / "b.db")))
    assert moved.trials[t1.number].intermediate_values == {1: 0.5, 2: 0.6}  # written to the new file
    first = optuna.load_study(study_name="s", storage=sqlite_storage(str(tmp_path / "a.db")))
    assert first.trials[t1.number].intermediate_values == {1: 0.5}  # the old file untouched


def test_a_trials_checkpoint_records_can_be_read_and_replaced():
    from ray import tune
    from ray.tune.experiment import Trial

    trial = Trial("x", stub=True)
    assert internals.checkpoint_results(trial) == []
    result = internals.training_result(tune.Checkpoint(path="/nowhere/checkpoint_000003"), {"epoch": 3})
    assert result.checkpoint.path.endswith("checkpoint_000003") and result.metrics == {"epoch": 3}
    internals.set_checkpoints(trial, [result], result, set_latest=True)
    assert internals.checkpoint_results(trial) == [result]
    assert trial.checkpoint is not None and trial.checkpoint.path.endswith("checkpoint_000003")  # what restores use
    internals.set_checkpoints(trial, [])
    assert internals.checkpoint_results(trial) == []


def test_the_experiment_state_manager_has_the_upload_state_birdtune_waits_on(tmp_path):
    from ray.train._internal.storage import StorageContext

    manager_cls = internals.experiment_state_manager()
    assert list(inspect.signature(manager_cls.sync_up_experiment_state).parameters) == ["self", "save_fn", "force", "wait"]
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")
    manager = manager_cls(storage=storage, checkpoint_period=1000)
    assert internals.upload_due(manager, force=True) is True
    assert internals.upload_due(manager, force=False) in (True, False)  # Ray's fields for its own condition exist
    internals.wait_for_upload(manager)  # nothing in flight: returns


def test_a_tuner_holds_the_run_config_a_restore_would_use(tmp_path):
    from ray import tune

    config = tune.RunConfig(name="x", storage_path=str(tmp_path), verbose=0)
    tuner = tune.Tuner(lambda c: None, run_config=config)
    got = internals.restored_run_config(tuner)
    assert isinstance(got, tune.RunConfig) and got.name == "x" and got.verbose == 0
