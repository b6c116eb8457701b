"""The searchers (search.searcher) driven by scripted results (no Ray trials): the ASHA-aware Optuna searcher,
the multi-fidelity TPE, the random-search domains, the study's SQLite file."""
import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import spaces
from search.searcher import AshaAwareOptunaSearch, local_move, make_searcher, startup_trials, tune_domains

SMOKE = spaces.get("smoke")


def searcher(db, max_t=3, points=()):
    return AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=max_t, study_name="s",
                                 db_path=str(db), points_to_evaluate=[dict(p) for p in points],
                                 sampler=optuna.samplers.TPESampler(seed=0))


def load(db):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{db}")


def test_states_values_and_intermediate_values(tmp_path):
    db = tmp_path / "optuna.db"
    s = searcher(db, points=SMOKE.points)
    configs = {t: s.suggest(t) for t in ("full", "cut", "nan", "err", "quiet")}
    assert configs["full"] == SMOKE.points[0]  # the warm start comes first
    for epoch, v in enumerate([0.5, 0.7, 0.6], 1):  # ran to max_t; its best epoch is the 2nd
        s.on_trial_result("full", {"epoch": epoch, "cmap": v, "training_iteration": epoch})
    s.on_trial_complete("full", {"epoch": 3, "cmap": 0.6})
    s.on_trial_result("cut", {"epoch": 1, "cmap": 0.2})  # ASHA stops it at its first rung
    s.on_trial_complete("cut", {"epoch": 1, "cmap": 0.2})
    s.on_trial_result("nan", {"epoch": 1, "cmap": 0.0, "status": "diverged"})
    s.on_trial_complete("nan", {"epoch": 1, "cmap": 0.0, "status": "diverged"})
    s.on_trial_result("err", {"epoch": 1, "cmap": 0.4})
    s.on_trial_complete("err", None, error=True)
    s.on_trial_complete("quiet", {"epoch": 2, "cmap": 0.3})  # final result only through on_trial_complete
    s.on_trial_complete("full", {"epoch": 3, "cmap": 0.6})  # told twice: ignored
    trials = load(db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.PRUNED]
    assert trials[0].value == 0.7 and trials[0].intermediate_values == {1: 0.5, 2: 0.7, 3: 0.6}
    assert trials[1].value == 0.2 and trials[1].intermediate_values == {1: 0.2}  # Optuna's pruned value: last one
    assert trials[2].value is None and trials[2].intermediate_values == {}  # a diverged score is no measurement
    assert trials[3].intermediate_values == {1: 0.4} and trials[4].intermediate_values == {2: 0.3}
    assert [t.params for t in trials] == list(configs.values())


def test_a_restart_reports_epochs_once_and_a_restored_searcher_continues_the_same_study(tmp_path):
    db = tmp_path / "optuna.db"
    s = searcher(db)
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", {"epoch": 1, "cmap": 0.5})
    s.on_trial_result("b", {"epoch": 1, "cmap": 0.4})
    s.save(str(tmp_path / "searcher-state.pkl"))
    orphan = s.suggest("c")  # asked for after the saved state: then the driver dies
    s2 = searcher(tmp_path / "other.db")
    s2.restore(str(tmp_path / "searcher-state.pkl"))  # optuna.db beside the state wins over the pickled path
    s2.on_trial_result("a", {"epoch": 1, "cmap": 0.9})  # repeated after a restart from the checkpoint
    for epoch in (2, 3):
        s2.on_trial_result("a", {"epoch": epoch, "cmap": 0.5 + epoch / 10})
    s2.on_trial_complete("a", {"epoch": 3, "cmap": 0.8})
    assert s2.suggest("d") == orphan  # the orphaned Optuna trial is taken over, not left RUNNING
    s2.on_trial_complete("b", {"epoch": 1, "cmap": 0.4})
    s2.on_trial_complete("d", None, error=True)
    trials = load(db).trials
    assert len(trials) == 3
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.7, 3: 0.8} and trials[0].value == 0.8
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]


def test_trials_asha_cut_are_pruned_so_optuna_counts_none_as_a_full_length_result(tmp_path):
    """Stock handling would tell Optuna these one-epoch scores are COMPLETE results (and the best ones)."""
    db = tmp_path / "optuna.db"
    s = searcher(db, max_t=3)
    for i in range(6):
        s.suggest(f"t{i}")
        s.on_trial_result(f"t{i}", {"epoch": 1, "cmap": 0.9 - i / 100})
        s.on_trial_complete(f"t{i}", {"epoch": 1, "cmap": 0.9 - i / 100})
    study = load(db)
    assert all(t.state == TrialState.PRUNED for t in study.trials)
    with pytest.raises(ValueError):  # no COMPLETE trial: Optuna has no best value to hand out
        study.best_value


def test_random_search_domains_match_the_space_bounds():
    finetune = spaces.get("finetune")
    domains = tune_domains(finetune)
    assert list(domains) == finetune.searched()
    draws = pd.DataFrame([{k: d.sample() for k, d in domains.items()} for _ in range(3000)])
    for name, d in finetune.distributions().items():
        assert draws[name].min() >= d["low"] and draws[name].max() <= d["high"], name
        if d["kind"] == "int":  # inclusive upper bound, on the step grid, as Optuna's suggest_int
            assert draws[name].max() == d["high"] and (draws[name] % d["step"] == d["low"] % d["step"]).all()
    assert (draws["lr"] < 3e-5).mean() > 0.3  # log-uniform: a third of the draws below lr 3e-5 of [1e-5, 3e-4]


def _drive(searcher, n: int) -> list[float]:
    """Suggest n trials one after another, each scored 1 - |log10(lr / 3e-3)| at full length; their lrs."""
    lrs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        lrs.append(config["lr"])
        searcher.on_trial_complete(f"t{i}", {"cmap": 1 - abs(math.log10(config["lr"] / 3e-3)), "epoch": 3})
    return lrs


def test_tpe_models_the_results_after_a_quarter_of_the_budget():
    assert [startup_trials(n) for n in (6, 16, 32, 100)] == [4, 4, 8, 10]
    tpe, space = make_searcher("tpe", SMOKE, max_t=3, seed=0, study_name="x", db_path=None, concurrency=1,
                               num_samples=16)
    assert space is None
    modelled = _drive(tpe, 16)
    blind = AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=3, study_name="y",
                                  points_to_evaluate=[dict(p) for p in SMOKE.points],
                                  sampler=optuna.samplers.RandomSampler(seed=0))
    unmodelled = _drive(blind, 16)

    def miss(lrs):  # median distance from the best lr, in decades
        return float(pd.Series([abs(math.log10(lr / 3e-3)) for lr in lrs]).median())

    # after its 4 start-up trials (and the notebook's point) TPE homes in on the best lr; random search does not
    assert miss(modelled[6:]) < 0.5 * miss(unmodelled[6:]), (modelled, unmodelled)


def test_the_factory_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown searcher 'grid'"):
        make_searcher("grid", SMOKE, max_t=3, seed=0, study_name="x", db_path=None, concurrency=1, num_samples=4)


def test_the_multi_fidelity_tpe_learns_from_the_rung_scores_of_stopped_trials(tmp_path):
    """mftpe: every trial's best score up to each rung it reached is an observation of that rung; once a
    rung holds enough, proposals come from a TPE on it (here: the good region of rung 1, which only
    trials ASHA stopped there have measured), while the study keeps the real states."""
    from search.searcher import MultiFidelityTPE

    s = MultiFidelityTPE(rungs=[1, 2, 3], min_points=4, seed=0, space=SMOKE.define, metric="cmap", mode="max",
                         max_t=3, study_name="s", db_path=str(tmp_path / "optuna.db"),
                         sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(12):  # stopped at rung 1: high lr scored well there
        config = s.suggest(f"r{i}")
        score = 0.9 if config["lr"] > 0.01 else 0.3
        s.on_trial_result(f"r{i}", {"epoch": 1, "cmap": score})
        s.on_trial_complete(f"r{i}", {"epoch": 1, "cmap": score})
    assert len(s._obs[1]) == 12 and not s._obs[2]
    assert s._proposed == 12 - 4  # the model took over once rung 1 held min_points scores
    proposed = [s.suggest(f"n{i}")["lr"] for i in range(8)]
    assert s._proposed == 16 and sum(lr > 0.01 for lr in proposed) >= 6, proposed  # from the rung-1 model
    study = load(tmp_path / "optuna.db")
    assert [t.state for t in study.trials[:12]] == [TrialState.PRUNED] * 12  # real states kept
    assert [t.params["lr"] for t in study.trials[12:]] == pytest.approx(proposed)  # the proposals, asked for


def test_a_local_move_stays_in_the_space_near_the_config_it_starts_from():
    import random

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = dict(lr=FloatDistribution(1e-5, 1e-1, log=True), drop=FloatDistribution(0.0, 0.5, step=0.05),
                 batch=IntDistribution(16, 512, log=True), layers=IntDistribution(1, 5), act=CategoricalDistribution(["a", "b"]))
    start = dict(lr=1e-3, drop=0.25, batch=64, layers=3, act="a")
    moved = [local_move((start, 0.9, dists), random.Random(i)) for i in range(300)]
    for m in moved:
        assert set(m) == set(start) and any(m[k] != start[k] for k in start), m  # at least one moves
        assert all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in m.items()), m  # bounds and steps
        assert isinstance(m["batch"], int) and isinstance(m["layers"], int) and isinstance(m["lr"], float)
    # about half the parameters move each time, by a tenth of the (log) range: near, not anywhere
    assert 0.4 < sum(m["act"] == "b" for m in moved) / len(moved) < 0.65
    steps = [abs(math.log10(m["lr"]) - math.log10(start["lr"])) for m in moved if m["lr"] != start["lr"]]
    assert 0.2 < float(pd.Series(steps).median()) < 0.5  # 0.1 x 4 decades x 0.67 (median of |N(0, 1)|) ~ 0.27


def test_after_enough_first_rung_scores_mftpe_proposes_near_the_incumbent_at_its_share(tmp_path):
    from search.searcher import MultiFidelityTPE

    s = MultiFidelityTPE(rungs=[1, 2, 3], min_points=4, seed=0, space=SMOKE.define, metric="cmap", mode="max",
                         max_t=3, study_name="s", db_path=None, sampler=optuna.samplers.RandomSampler(seed=0),
                         local=0.5, local_after=20)
    best = None
    for i in range(20):  # stopped at rung 1: the higher lr, the better
        config = s.suggest(f"r{i}")
        s.on_trial_result(f"r{i}", {"epoch": 1, "cmap": config["lr"]})
        s.on_trial_complete(f"r{i}", {"epoch": 1, "cmap": config["lr"]})
        best = config if best is None or config["lr"] > best["lr"] else best
    near = [s.suggest(f"n{i}") for i in range(40)]
    local = [c for c in near if any(c[k] == best[k] for k in best)]  # a local move keeps some of the incumbent's
    assert 10 <= len(local) <= 30, (best, near)  # about half


def test_suggestion_time_is_measured_by_the_replay_script():
    """The < 50 ms per suggestion at 1,024 trials is a timing target: tests/bench/replay.py --timing measures
    it and prints whether the target is met (a wall-clock assertion here would fail on a loaded machine).
    This only checks that the measurement runs and returns milliseconds."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
    import replay

    ms = replay.suggestion_time("mftpe", spaces.get("finetune").on_demo(), 32, repeats=2)
    assert 0 < ms < 60_000 and replay.SUGGEST_MS_TARGET == 50


def test_the_study_file_is_written_ahead_without_a_disk_wait_per_commit(tmp_path):
    """Every connection to the study's SQLite file runs in WAL mode with synchronous=NORMAL (search.searcher.
    sqlite_storage says why), and what it commits is there for the next reader."""
    import optuna
    from search.searcher import sqlite_storage

    storage = sqlite_storage(str(tmp_path / "s.db"))
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.5})
    with storage.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, 1.0)
    again = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.value for t in again.trials] == [1.0] and again.trials[0].params == {"x": 0.5}


def test_the_study_copied_beside_the_state_for_a_bucket_is_one_file_holding_every_trial(tmp_path):
    """With URI storage the searcher copies the study beside its state (Ray uploads both, and --resume on
    another machine fetches optuna.db alone): the copy has to be complete in that one file. The bucket once
    held optuna.db-wal and -shm beside it, and the optuna.db a resume fetched lacked the newest trials
    (KeyError 'Record does not exist', Ray restoring a search of 1 trial: test_s3's killed search)."""
    import shutil

    s = AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=3, study_name="s",
                              db_path=str(tmp_path / "optuna.db"), copy_study=True,
                              sampler=optuna.samplers.TPESampler(seed=0))
    for t in ("a", "b", "c"):
        s.suggest(t)
        s.on_trial_result(t, {"epoch": 1, "cmap": 0.5})
    staged = tmp_path / "staging"
    staged.mkdir()
    s.save(str(staged / "searcher-state.pkl"))
    assert sorted(p.name for p in staged.iterdir()) == ["optuna.db", "searcher-state.pkl"]
    fetched = tmp_path / "machine2"
    fetched.mkdir()
    for name in ("optuna.db", "searcher-state.pkl"):  # what another machine fetches
        shutil.copy(staged / name, fetched / name)
    s2 = AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=3, study_name="s",
                               db_path=str(tmp_path / "gone.db"), copy_study=True)
    s2.restore(str(fetched / "searcher-state.pkl"))
    assert [t.intermediate_values for t in load(fetched / "optuna.db").trials] == [{1: 0.5}] * 3
    s2.on_trial_complete("a", {"epoch": 3, "cmap": 0.7})
    assert load(fetched / "optuna.db").trials[0].state == TrialState.COMPLETE


def test_a_resumed_searcher_adds_the_trials_its_study_copy_missed_from_the_journal(tmp_path):
    """With storage in a bucket the study a resume fetches is the copy saved with Ray's last state, while the
    journal knows trials started (and ended) since: each is added to the study with the config it ran and
    told its results, so the study holds every trial (test_s3's killed search once ended with 7 of 8)."""
    import json
    import shutil

    from ray import tune
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from search import internals, journal

    log = tmp_path / "results_log.jsonl"
    s = AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=3, study_name="s",
                              db_path=str(tmp_path / "optuna.db"), copy_study=True, journal=str(log),
                              sampler=optuna.samplers.TPESampler(seed=0))
    s.suggest("a")
    staged = tmp_path / "staging"
    staged.mkdir()
    s.save(str(staged / "searcher-state.pkl"))  # Ray's last saved state: trial a only
    late = s.suggest("b")  # started after it; the driver is then killed
    events, storage = [], StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")
    for tid, config in (("a", None), ("b", late)):
        trial = Trial("train", config=config or {}, trial_id=tid, stub=True, storage=storage,
                      placement_group_factory=tune.PlacementGroupFactory([{"CPU": 1}]))
        trial.create_placement_group_factory()  # as Ray's controller does when a trial is added
        events.append({"event": journal.START, "trial_id": tid, "trial": list(internals.trial_state(trial))})
    events += [{"event": journal.RESULT, "trial_id": "b", "epoch": e, "cmap": c} for e, c in ((1, 0.5), (2, 0.6))]
    events.append({"event": journal.END, "trial_id": "b", "status": "TERMINATED"})
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    fetched = tmp_path / "machine2"
    fetched.mkdir()
    shutil.copy(staged / "optuna.db", fetched / "optuna.db")
    assert len(load(fetched / "optuna.db").trials) == 1
    s2 = AshaAwareOptunaSearch(space=SMOKE.define, metric="cmap", mode="max", max_t=3, study_name="s",
                               db_path=str(tmp_path / "gone.db"), copy_study=True)
    s2.resume_with(journal=str(log), study=str(fetched / "optuna.db"), known=["a", "b"])
    s2.restore(str(staged / "searcher-state.pkl"))
    trials = load(fetched / "optuna.db").trials
    assert len(trials) == 2 and trials[1].params == late and trials[1].user_attrs["ray_trial_id"] == "b"
    assert trials[1].state == TrialState.PRUNED and trials[1].intermediate_values == {1: 0.5, 2: 0.6}
    assert trials[0].state == TrialState.RUNNING
    s2.on_trial_complete("a", {"epoch": 3, "cmap": 0.7})
    assert load(fetched / "optuna.db").trials[0].state == TrialState.COMPLETE
