"""The ASHA-aware Optuna searcher driven by scripted results (no Ray trials), the random-search domains
and parameter importances."""
import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import spaces
from search import importance, revalidate
from search.searcher import AshaAwareOptunaSearch, make_scheduler, make_searcher, startup_trials, tune_domains

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


def test_factories_refuse_unknown_names():
    with pytest.raises(ValueError, match="unknown searcher 'grid'"):
        make_searcher("grid", SMOKE, max_t=3, seed=0, study_name="x", db_path=None, concurrency=1, num_samples=4)
    with pytest.raises(ValueError, match="unknown scheduler 'pbt'"):
        make_scheduler("pbt", max_t=3, grace_period=1, reduction_factor=2)


def _table(n=8):
    rows, curves = [], []
    for i in range(n):
        lr, drop = 1e-3 * (1 + i), 0.05 * ((5 * i) % n)  # drop_rate uncorrelated with lr
        score = 0.5 + 20 * lr  # driven by lr only
        status = "completed" if i % 2 else "stopped_early"
        rows.append(dict(trial_id=f"t{i}", trial_index=i, lr=lr, drop_rate=drop, best_cmap=score, status=status))
        curves += [dict(trial_id=f"t{i}", trial_index=i, epoch=e, cmap=score - (3 - e) / 100)
                   for e in range(1, (3 if i % 2 else 1) + 1)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_importance_finds_the_parameter_that_drives_the_score():
    table, curves = _table()
    imp = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=3, rung=1)
    assert set(imp["param"]) == {"lr", "drop_rate"} and imp["target"].nunique() == 2
    for target, g in imp.groupby("target"):
        assert g["importance"].sum() == pytest.approx(1.0)
        assert g.set_index("param")["importance"]["lr"] > 0.5, target
    assert set(imp["trials"]) == {4, 8}  # completed trials only / every trial at the first rung
    few = importance.importances(table.head(2), curves[curves.trial_index < 2], "smoke", ["lr", "drop_rate"], 3, 1)
    assert few.empty and list(few.columns) == importance.COLUMNS


def test_revalidation_candidates_and_ranking():
    table, _ = _table()
    table.loc[7, "status"] = "errored"
    cands = revalidate.candidates(table, 3)
    assert cands["trial_index"].tolist() == [6, 5, 4]  # the best scores, the errored trial 7 left out
    items = revalidate.runs(table, ["lr", "drop_rate"], 2, [1, 2])
    assert [(i["trial_index"], i["fold"]) for i in items] == [(6, 1), (6, 2), (5, 1), (5, 2)]
    assert items[0]["params"] == {"lr": pytest.approx(0.007), "drop_rate": pytest.approx(0.3)}
    runs = pd.DataFrame([dict(trial_id="t6", trial_index=6, fold=1, best_cmap=0.60, status="completed"),
                         dict(trial_id="t6", trial_index=6, fold=2, best_cmap=0.70, status="completed"),
                         dict(trial_id="t5", trial_index=5, fold=1, best_cmap=0.66, status="completed"),
                         dict(trial_id="t5", trial_index=5, fold=2, best_cmap=0.68, status="completed"),
                         dict(trial_id="t4", trial_index=4, fold=1, best_cmap=0.99, status="completed"),
                         dict(trial_id="t4", trial_index=4, fold=2, best_cmap=0.0, status="errored")])
    rank = revalidate.ranking(runs, [1, 2])
    assert rank["trial_index"].tolist() == [5, 6, 4]  # mean 0.67 beats 0.65; t4 lacks a fold
    assert rank.loc[0, "mean_cmap"] == pytest.approx(0.67) and math.isnan(rank.loc[2, "mean_cmap"])
    assert rank.loc[0, "per_fold"] == {1: 0.66, 2: 0.68}


def test_the_state_upload_finishes_before_ray_rewrites_the_state_files(tmp_path):
    """search.tuning.upload_before_rewrite: Ray's experiment state manager waits for its running upload
    before save_fn rewrites the staging files (the overlap made an upload fail with a copy_files error)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as Manager

    from search.tuning import upload_before_rewrite

    upload_before_rewrite()
    upload_before_rewrite()  # idempotent
    events = []

    class Syncer:
        def wait(self):
            events.append("upload finished")

        def sync_up(self, *a, **k):
            events.append("upload started")
            return True

    storage = type("Storage", (), {"syncer": Syncer(), "experiment_driver_staging_path": str(tmp_path),
                                   "experiment_fs_path": str(tmp_path)})()
    manager = Manager(storage=storage, checkpoint_period="auto")
    manager.sync_up_experiment_state(lambda: events.append("state rewritten"), force=True)
    assert events.index("upload finished") < events.index("state rewritten") < events.index("upload started")


def test_the_multi_fidelity_tpe_learns_from_the_rung_scores_of_stopped_trials(tmp_path):
    """mftpe: every trial's best score up to each rung it reached is an observation of that rung; once a
    rung holds enough, proposals come from a TPE on it (here: the good region of rung 1, which only
    trials ASHA stopped there have measured), while the study keeps the real states."""
    from search.searcher import MultiFidelityTPE, rung_epochs

    assert rung_epochs(8, 1, 4) == [1, 4, 8] and rung_epochs(3, 1, 2) == [1, 2, 3]
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


class _T:
    def __init__(self, trial_id):
        self.trial_id, self.config, self.status = trial_id, {}, "RUNNING"


def test_budgeted_asha_without_a_budget_decides_as_rays_asha():
    """Contract: on random result streams (rungs, reduction factors, arrival orders) birdtune's ASHA with no
    budget stops exactly the trials Ray's ASHAScheduler stops, at the same epochs."""
    import numpy as np
    from ray.tune.schedulers import ASHAScheduler

    from search.searcher import BudgetedASHA

    for seed in range(25):
        rng = np.random.default_rng(seed)
        max_t, grace, rf = int(rng.integers(3, 60)), int(rng.integers(1, 4)), int(rng.integers(2, 5))
        ray_asha = ASHAScheduler(time_attr="epoch", metric="cmap", mode="max", max_t=max_t, grace_period=grace,
                                 reduction_factor=rf)
        ours = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=max_t, grace_period=grace,
                            reduction_factor=rf, num_samples=20, budget=0)
        epochs, stopped = {f"t{i}": 0 for i in range(20)}, {}
        for tid in epochs:
            ray_asha.on_trial_add(None, _T(tid))
        while len(stopped) < len(epochs):
            tid = f"t{int(rng.integers(20))}"
            if tid in stopped:
                continue
            epochs[tid] += 1
            result = {"epoch": epochs[tid], "cmap": float(rng.uniform())}
            decision = ray_asha.on_trial_result(None, _T(tid), result)
            assert ours.on_trial_result(None, _T(tid), result) == decision, (seed, tid, epochs[tid])
            if decision == "STOP":
                stopped[tid] = epochs[tid]
                ray_asha.on_trial_complete(None, _T(tid), result)
        assert min(stopped.values()) < max_t  # streams where ASHA did stop trials


def test_budgeted_asha_promotes_at_most_its_share_then_only_new_leaders():
    """16 trials, rungs 1 and 4 (rf 4): rung 1 may promote ceil(1.5 x 16 / 4) = 6 trials. Rising scores
    would all pass Ray's rule; past the budget only a score above every recorded one goes on."""
    from search.searcher import BudgetedASHA

    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1, reduction_factor=4,
                        num_samples=16, budget=1.5)
    rising = [asha.decide(f"t{i}", 1, 0.1 + 0.01 * i) for i in range(10)]
    assert rising == ["CONTINUE"] * 6 + ["CONTINUE"] * 4  # each a new leader: still promoted
    assert asha.decide("t10", 1, 0.185) == "STOP"  # top quarter by Ray's rule, but the budget is spent
    assert asha.decide("t11", 1, 0.5) == "CONTINUE"  # a new leader always goes on
    assert asha.decide("t0", 4, 0.3) == "CONTINUE" and asha.decide("t0", 8, 0.3) == "STOP"  # max_t ends it
    within = BudgetedASHA(time_attr="epoch", metric="cmap", mode="min", max_t=8, grace_period=1,
                          reduction_factor=4, num_samples=16, budget=1.5)
    assert [within.decide(f"t{i}", 1, 1.0 - 0.01 * i) for i in range(7)][-1] == "CONTINUE"  # mode min: lower wins
    assert within.decide("t7", 1, 0.945) == "STOP"


def test_untested_ray_or_optuna_releases_are_named_in_one_line(monkeypatch):
    import importlib.metadata

    from search import cluster, layout

    assert cluster.untested_versions() is None  # the installed ones are the tested ones
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "5.1.0" if n == "optuna" else real(n))
    line = cluster.untested_versions()
    assert line and "\n" not in line and "Optuna 5.1.0" in line and "Ray 2.60 and Optuna 5.0" in line
    assert layout.TESTED_VERSIONS == {"ray": "2.60", "optuna": "5.0"}


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
