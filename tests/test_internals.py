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
    for suffix in ("", "-wal", "-shm"):  # a moved results folder: the study's file and its write-ahead log
        if (tmp_path / f"a.db{suffix}").exists():
            shutil.copy(tmp_path / f"a.db{suffix}", tmp_path / f"b.db{suffix}")
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


def _trial(tmp_path, trial_id="abc12345", tag="3_lr=0.1"):
    from ray.train._internal.storage import StorageContext
    from ray.tune import PlacementGroupFactory
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")
    trial = Trial("x", stub=True, config={"lr": 0.1}, trial_id=trial_id, experiment_tag=tag, storage=storage,
                  placement_group_factory=PlacementGroupFactory([{"CPU": 1}]))
    trial.create_placement_group_factory()  # as Ray's controller does when a trial is added
    return trial


def test_a_trial_goes_through_its_saved_state_and_back(tmp_path):
    """What search.recovery does to a saved trial: read it, add a result and a status, point it at the
    experiment's place, write it back; and the journal's copy of a trial started is the same state."""
    trial = _trial(tmp_path)
    state, run_metadata = internals.trial_state(trial)
    assert isinstance(state, str) and isinstance(run_metadata, str)
    again = internals.trial_from_state(state, run_metadata)
    assert (again.trial_id, again.config, again.experiment_tag, again.stub) == ("abc12345", {"lr": 0.1}, "3_lr=0.1", False)
    internals.set_last_result(again, {"epoch": 2, "training_iteration": 2})
    again.set_status("TERMINATED")
    internals.relocate(again, str(tmp_path / "moved" / "exp"))
    assert again.storage.storage_fs_path == str(tmp_path / "moved") and again.storage.experiment_dir_name == "exp"
    third = internals.trial_from_state(*internals.trial_state(again))
    assert third.status == "TERMINATED" and internals.last_result(third) == {"epoch": 2, "training_iteration": 2}
    import json

    assert json.loads(json.dumps({"v": __import__("numpy").float32(0.5)}, cls=internals.result_encoder()))["v"] == 0.5


def test_the_search_generators_saved_state_can_be_read_fixed_and_written(tmp_path):
    """Ray's SearchGenerator + ConcurrencyLimiter state: the trial counter and the trials held as running."""
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    gen = SearchGenerator(ConcurrencyLimiter(OptunaSearch(space=_space, metric="cmap", mode="max"), max_concurrent=2))
    gen.save_to_dir(str(tmp_path), session_str="s1")
    [name] = [p.name for p in tmp_path.iterdir() if p.name.startswith(internals.GENERATOR_PREFIX)]
    state = internals.load_generator_state((tmp_path / name).read_bytes())
    assert state["counter"] == 0 and state["name:ConcurrencyLimiter"]["live_trials"] == set()
    internals.fix_generator_state(state, 5, {"a", "b"})
    back = internals.load_generator_state(internals.dump_generator_state(state))
    assert back["counter"] == 5 and back["name:ConcurrencyLimiter"]["live_trials"] == {"a", "b"}
    assert back["name:ConcurrencyLimiter"]["num_unfinished_live_trials"] == 2
    (tmp_path / name).write_bytes(internals.dump_generator_state(back))
    gen.restore_from_dir(str(tmp_path))  # Ray reads the written state
    assert gen.get_state()["counter"] == 5 and gen.searcher.live_trials == {"a", "b"}


def test_a_saved_state_is_found_by_its_file_names(tmp_path):
    assert not internals.has_saved_state(str(tmp_path))
    (tmp_path / f"{internals.STATE_PREFIX}2026-01-01_00-00-00.json").write_text("{}")
    assert not internals.has_saved_state(str(tmp_path))  # the search generator's is not there yet (Ray's first upload)
    (tmp_path / f"{internals.GENERATOR_PREFIX}2026-01-01_00-00-00.json").write_bytes(b"x")
    assert not internals.has_saved_state(str(tmp_path))  # nor the searcher's
    (tmp_path / f"{internals.SEARCHER_PREFIX}2026-01-01_00-00-00.pkl").write_bytes(b"x")
    assert internals.has_saved_state(str(tmp_path))
    (tmp_path / f"{internals.STATE_PREFIX}2026-02-01_00-00-00.json").write_text("{}")
    assert internals.saved_sessions(sorted(p.name for p in tmp_path.iterdir())) == \
        ["2026-01-01_00-00-00", "2026-02-01_00-00-00"]  # the newest last: the one Ray restores


def test_rays_uploads_to_a_local_storage_path_rename_whole_files(tmp_path):
    """After atomic_local_uploads, Ray's driver syncer writes each file under a temporary name and renames it
    (a copy over the file in place could be cut short by a kill): same files, no temporaries left."""
    import pyarrow.fs as pafs
    from ray.train._internal.storage import _FilesystemSyncer

    assert list(inspect.signature(_FilesystemSyncer._sync_up_command).parameters) == ["self", "local_path", "uri", "exclude"]
    internals.atomic_local_uploads()
    internals.atomic_local_uploads()  # once per process
    src, dst = tmp_path / "staging", tmp_path / "storage"
    (src / "trial").mkdir(parents=True)
    (src / "experiment_state-x.json").write_text("new")
    (src / "trial" / "result.json").write_text("{}\n")
    (src / "skip.tmp").write_text("no")
    dst.mkdir()
    (dst / "experiment_state-x.json").write_text("old state, longer than the new")
    syncer = _FilesystemSyncer(storage_filesystem=pafs.LocalFileSystem(), sync_period=0)
    fn, kwargs = syncer._sync_up_command(str(src), str(dst), exclude=["*.tmp"])
    fn(**kwargs)
    assert (dst / "experiment_state-x.json").read_text() == "new" and (dst / "trial" / "result.json").read_text() == "{}\n"
    assert sorted(p.name for p in dst.rglob("*")) == ["experiment_state-x.json", "result.json", "trial"]


def test_a_restored_tuner_holds_the_searcher_and_scheduler_its_fit_restores(tmp_path):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    searcher, scheduler = OptunaSearch(space=_space, metric="cmap", mode="max"), FIFOScheduler()
    tuner = tune.Tuner(lambda c: None, tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler),
                       run_config=tune.RunConfig(name="y", storage_path=str(tmp_path), verbose=0))
    assert internals.restored_search(tuner) == (searcher, scheduler)


def test_fast_suggestions_compute_the_same_values_and_suggestions():
    import numpy as np
    from optuna.samplers._tpe import _truncnorm
    import inspect

    from ray.tune.search.optuna import OptunaSearch, optuna_search

    def suggestions():
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, multivariate=True,
                                                                       n_startup_trials=5))
        for _ in range(30):
            t = study.ask()
            x, y = t.suggest_float("x", -5, 5), t.suggest_float("y", 1e-3, 1.0, log=True)
            n = t.suggest_int("n", 1, 9)  # a discrete parameter: TPE's Phi (_ndtr) computes its masses
            study.tell(t, (x - 1.3) ** 2 + abs(np.log(y) + 2) + abs(n - 4))
        return [t.params for t in study.trials]

    def ray_suggestions():  # through Ray's wrapper of the suggest_* calls, which captures their values
        def space(trial):
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            trial.suggest_int(name="width", low=8, high=64)  # by keyword too
            return None

        s = OptunaSearch(space=space, metric="cmap", mode="max",
                         sampler=optuna.samplers.TPESampler(seed=5, n_startup_trials=3))
        out = []
        for i in range(8):
            config = s.suggest(f"t{i}")
            s.on_trial_complete(f"t{i}", {"cmap": -abs(np.log10(config["lr"]) + 2) - config["width"] / 64})
            out.append(config)
        bad = OptunaSearch(space=lambda trial: trial.suggest_float(low=0, high=1), metric="cmap", mode="max")
        with pytest.raises(ValueError, match="missing required argument: name"):
            bad.suggest("t")
        return out

    internals.fast_suggestions(False)
    original_log, original = _truncnorm._log_ndtr, _truncnorm._ndtr
    before, ray_before = suggestions(), ray_suggestions()
    internals.fast_suggestions()
    internals.fast_suggestions()  # installed once
    assert _truncnorm._log_ndtr.birdtune and _truncnorm._ndtr is not original
    assert optuna_search.inspect is not inspect and optuna_search.inspect.Parameter is inspect.Parameter
    x = np.concatenate([np.linspace(-60, 60, 20001), [-1e3, -20.0001, -20.0, 6.0, 6.0001, 1e3]])
    assert np.abs(_truncnorm._log_ndtr(x) - original_log(x)).max() < 1e-12
    assert np.abs(_truncnorm._ndtr(x) - original(x)).max() < 1e-15
    for f in (_truncnorm._log_ndtr, _truncnorm._ndtr):
        assert f(x).dtype == np.float64 and f(x).shape == x.shape
    after, ray_after = suggestions(), ray_suggestions()
    # TPE suggests what it did (to rounding: the last digits of a sample may differ)
    assert len(after) == len(before) == 30 and len(ray_after) == 8
    assert all(a == pytest.approx(b, rel=1e-9, abs=1e-12) for a, b in zip(after, before))
    assert all(a == pytest.approx(b, rel=1e-9, abs=1e-12) for a, b in zip(ray_after, ray_before))
    assert len({c["width"] for c in ray_after}) > 1 and ray_after[0]["width"] == ray_before[0]["width"]
    internals.fast_suggestions(False)
    assert (_truncnorm._log_ndtr, _truncnorm._ndtr) == (original_log, original)
    assert optuna_search.inspect is inspect
    internals.fast_suggestions()


def test_tell_without_the_copy_records_what_study_tell_records(tmp_path):
    storage = sqlite_storage(str(tmp_path / "t.db"))

    def told(name, tell):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        trials = [study.ask() for _ in range(3)]
        for t in trials:
            t.suggest_float("x", 0, 1)
            t.report(0.25, 1)
        tell(study, trials[0], 0.75)
        tell(study, trials[1], None, TrialState.PRUNED)  # Optuna records its last reported value
        tell(study, trials[2], None, TrialState.FAIL)
        with pytest.raises(ValueError, match="Cannot tell a COMPLETE trial"):  # told twice: refused
            tell(study, trials[0], 0.5)
        again = optuna.load_study(study_name=name, storage=storage)
        return [(t.state, t.value, t.intermediate_values) for t in again.get_trials()]

    ours = told("ours", internals.tell)
    assert ours == told("optuna's", lambda study, trial, value, state=None: study.tell(trial, value, state=state))
    assert [s for s, _, _ in ours] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert ours[0][1] == 0.75
