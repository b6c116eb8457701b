"""End-to-end searches with `python -m search.run` on the smoke space (Ray on this machine's CPUs)."""
import os
import re
import shutil
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

import spaces
from core.config import TrainConfig
import helpers
from helpers import free_port, read_table, search
from search.layout import STATUSES

pytestmark = pytest.mark.slow


def test_smoke_search_outputs(finished):
    exp, r = finished
    space = spaces.get("smoke")
    table = pd.read_parquet(exp / "trials.parquet")
    assert len(table) == space.num_samples == len(read_table(exp / "trials.csv"))
    assert set(table["status"]) <= set(STATUSES) and "errored" not in set(table["status"])
    assert table["trial_index"].tolist() == list(range(space.num_samples))
    # the warm-start point (the space's first point) was the first trial
    first = table.iloc[0]
    assert {k: first[k] for k in space.points[0]} == pytest.approx(space.points[0])
    # ASHA stopped at least one trial: fewer epochs than trials x max_t
    assert table["epochs"].sum() < len(table) * space.epochs
    assert (table["status"] == "stopped_early").any()
    assert (table.loc[table.status == "completed", "epochs"] == space.epochs).all()
    assert "trials (" in r.stdout and "best: trial" in r.stdout
    # one local node: a trial slot's worker process (imports, CUDA context) carries on to its next trial
    assert "worker processes reused" in r.stdout
    assert len(trial_pids(exp)) < space.num_samples
    assert "Token authentication" not in r.stderr  # Ray's own warning: the search says what matters


def trial_pids(exp) -> set[int]:
    """The worker process ids the search's trials reported from."""
    return {int(p) for f in exp.glob("train_trial_*/progress.csv") for p in pd.read_csv(f)["pid"]}


def asha_replay(exp, spec_file="search.yaml") -> dict[str, int]:
    """Each trial's STOP epoch when the search's results log is fed, in its order, to a fresh ASHA."""
    from search import journal
    from search.scheduler import ResumableASHA, replay

    meta = yaml.safe_load((exp / spec_file).read_text())
    logged = journal.results(journal.read(str(exp / "results_log.jsonl")))
    fresh = ResumableASHA(time_attr="epoch", metric="cmap", mode="max", max_t=meta["max_t"],
                          grace_period=meta["grace_period"], reduction_factor=meta["reduction_factor"],
                          num_samples=meta["num_samples"])
    return replay(fresh, logged)


def test_replaying_the_results_log_reproduces_every_asha_decision(finished):
    """The log holds the results in the order the driver took them: a fresh ASHA fed with it stops each
    trial at the epoch the search did (the basis of rebuilding ASHA on --resume)."""
    exp, _ = finished
    table = read_table(exp / "trials.csv")
    assert (table.status == "stopped_early").any() and (table.status == "completed").any()
    assert asha_replay(exp) == dict(zip(table.trial_id, table.epochs))


def test_the_optuna_study_matches_the_trials(finished):
    exp, _ = finished
    table = pd.read_parquet(exp / "trials.parquet")
    curves = read_table(exp / "curves.csv")
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.trials) == len(table)
    assert yaml.safe_load((exp / "search.yaml").read_text())["searcher"] == "mftpe"  # the default's study
    state = {"completed": TrialState.COMPLETE, "stopped_early": TrialState.PRUNED}
    for ot, (_, row) in zip(study.trials, table.iterrows()):  # Optuna's numbers are the launch order
        assert ot.state == state[row["status"]] and ot.params == pytest.approx({"lr": row.lr, "drop_rate": row.drop_rate})
        mine = curves[curves.trial_id == row.trial_id]
        assert ot.intermediate_values == pytest.approx(dict(zip(mine.epoch, mine.cmap)))
        if ot.state == TrialState.COMPLETE:  # the best epoch, not the last
            assert ot.value == pytest.approx(row.best_cmap)
    assert curves.groupby("trial_id").size().to_dict() == table.set_index("trial_id")["epochs"].to_dict()


def test_importance_is_written_for_the_searched_parameters(finished):
    exp, _ = finished
    table = pd.read_parquet(exp / "trials.parquet")
    imp = pd.read_csv(exp / "importance.csv")
    assert not imp.empty and set(imp["param"]) == {"lr", "drop_rate"}
    for target, g in imp.groupby("target"):
        assert g["importance"].sum() == pytest.approx(1.0) and (g["importance"] >= 0).all()
        expected = (table.status == "completed").sum() if target.startswith("best") else len(table)
        assert (g["trials"] == expected).all(), target


def test_revalidation_retrains_the_top_configs_on_other_folds_and_picks_the_best_mean(finished):
    exp, r = finished
    table = pd.read_parquet(exp / "trials.parquet")
    runs = read_table(exp / "revalidation.csv")
    top2 = table.sort_values("best_cmap", ascending=False).head(2)
    assert sorted(runs.trial_id.unique()) == sorted(top2.trial_id) and sorted(runs.fold.unique()) == [1, 2]
    assert (runs.status == "completed").all() and (runs.epochs == spaces.get("smoke").epochs).all()
    for _, run in runs.iterrows():  # the values re-run are the trial's own
        row = table[table.trial_id == run.trial_id].iloc[0]
        assert run.lr == pytest.approx(row.lr) and run.drop_rate == pytest.approx(row.drop_rate)
    means = runs.groupby("trial_id")["best_cmap"].mean()
    chosen = table[table.trial_id == means.idxmax()].iloc[0]
    text = (exp / "best" / "config.yaml").read_text()
    header = yaml.safe_load("\n".join(ln[2:] for ln in text.splitlines() if ln.startswith("# ")))
    assert header["trial_id"] == chosen.trial_id
    assert header["revalidation_mean_cmap"] == pytest.approx(means.max())
    assert header["revalidation_cmap_per_fold"] == pytest.approx(
        runs[runs.trial_id == chosen.trial_id].set_index("fold")["best_cmap"].to_dict())
    cfg = TrainConfig.load(exp / "best" / "config.yaml")
    assert cfg.lr == pytest.approx(chosen.lr) and cfg.fold == 0
    assert "chosen by re-validation" in r.stdout


def test_resume_of_a_finished_experiment_changes_nothing(finished, tmp_path):
    exp, _ = finished
    before = pd.read_parquet(exp / "trials.parquet")
    runs = read_table(exp / "revalidation.csv")
    exp = tmp_path / "e2e"
    shutil.copytree(finished[0], exp)  # the shared experiment stays as the other tests read it
    r = search("--storage-path", str(exp.parent), "--name", "e2e", "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(exp / "trials.parquet"), before)
    pd.testing.assert_frame_equal(read_table(exp / "revalidation.csv"), runs)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.trials) == len(before)


def test_existing_experiment_is_not_overwritten(finished):
    exp, _ = finished
    r = search("--storage-path", str(exp.parent), "--name", "e2e")
    assert r.returncode == 2 and "already exists" in r.stderr and "--resume" in r.stderr


def test_optuna_dashboard_opens_the_study(finished):
    exp, _ = finished
    port = free_port()
    cli = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
    proc = subprocess.Popen([cli, f"sqlite:///{exp / 'optuna.db'}", "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import json
        import urllib.request

        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    studies = json.load(resp)["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies and studies[0]["study_name"] == "e2e"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", timeout=10) as resp:
            study = json.load(resp)
        table = pd.read_parquet(exp / "trials.parquet")
        names = {"completed": "Complete", "stopped_early": "Pruned"}
        assert [t["state"] for t in study["trials"]] == [names[s] for s in table["status"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_random_search_without_early_stopping(tmp_path):
    r = search("--storage-path", str(tmp_path), "--name", "rand", "--searcher", "random", "--scheduler", "none",
               "--num-samples", "4", "--seed", "3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / "rand"
    table = pd.read_parquet(exp / "trials.parquet")
    smoke = spaces.get("smoke")
    assert table["trial_index"].tolist() == [0, 1, 2, 3] and (table["status"] == "completed").all()
    assert (table["epochs"] == smoke.epochs).all()
    first = table.iloc[0]  # the warm start comes first here too
    assert {k: first[k] for k in smoke.points[0]} == pytest.approx(smoke.points[0])
    d = smoke.distributions()
    assert table["lr"].between(d["lr"]["low"], d["lr"]["high"]).all() and table["lr"].nunique() == 4
    assert not (exp / "optuna.db").exists() and "random + none" in r.stdout
    assert set(pd.read_csv(exp / "importance.csv")["trials"]) == {4}


def test_trials_the_time_budget_cuts_are_unfinished_in_the_live_lines_and_the_table(tmp_path):
    # 100 epochs (about 25 s a trial here) against a 9 s budget: the first trial is running when it ends
    # (with short trials the budget may end between two, and nothing is cut)
    r = search("--storage-path", tmp_path, "--name", "tb", "--num-samples", "30", "--concurrency", "1",
               "--time-budget", "9", "--scheduler", "none", "--epochs", "100")
    table = read_table(tmp_path / "tb" / "trials.csv")
    cut = table[table.status == "unfinished"]
    assert len(cut) == 1 and cut.epochs.iloc[0] < 100, table  # no scheduler: nothing else stops a trial
    assert (tmp_path / "tb" / "cut_trials.txt").read_text().split() == [cut.trial_id.iloc[0]]
    assert f"trial {cut.trial_index.iloc[0]:>3} unfinished at epoch" in r.stdout
    # the budget is the search's: spent, it is done (a --resume would start nothing)
    # counted up to the step of Ray's loop that saw it spent (not Ray's stopping of a worker still starting,
    # seconds more on a loaded machine): 9 s, or 10 where that step came over half a second late
    spent = re.search(r"budget: 9s of search time; spent (\d+)s of 9s \(the budget ended the search\)", r.stdout)
    assert r.returncode == 0 and spent and int(spent.group(1)) in (9, 10), r.stdout[-2000:]


def test_an_epoch_budget_is_spent_once_across_a_killed_driver_and_its_resume(tmp_path):
    """--epoch-budget with no --num-samples: trials start until the budget would be spent; the driver killed
    midway, --resume spends what is left and no more, and says so."""
    import signal

    env = {**helpers.ENV, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    killed = search("--storage-path", tmp_path, "--name", "eb", "--epoch-budget", "12", chaos="result@5",
                    fault_dir=tmp_path / "chaos", popen=True, start_new_session=True, env=env)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    r = search("--storage-path", tmp_path, "--name", "eb", "--resume", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "budget 12 trial-epochs: spent 5 of 12 trial-epochs before this run" in r.stdout
    table = read_table(tmp_path / "eb" / "trials.csv")
    smoke = spaces.get("smoke")
    # the search ends at the budget: the trials still running then are cut (results in flight may add one)
    assert 12 <= table.epochs.sum() <= 12 + 1 and len(table) > 12 // smoke.epochs, table
    assert f"budget: 12 trial-epochs; spent {table.epochs.sum()} of 12 trial-epochs (the budget ended the search)" in r.stdout
    again = search("--storage-path", tmp_path, "--name", "eb", "--resume", env=env)
    assert again.returncode == 0 and len(read_table(tmp_path / "eb" / "trials.csv")) == len(table)
    assert read_table(tmp_path / "eb" / "trials.csv").epochs.sum() == table.epochs.sum()
