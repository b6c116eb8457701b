"""Reliability: injected faults (crash, OOM, divergence, driver kill, Ctrl-C, lost node).

Faults go in through tests/faults.py, which hands search.run.main a TrialHooks; the product has no fault
hook of its own. Bad input: tests/test_bad_input.py.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import spaces
from helpers import ENV, wait_for

import helpers

pytestmark = pytest.mark.slow
SMOKE = spaces.get("smoke")
WARM_LR = SMOKE.points[0]["lr"]  # the first trial's lr: faults aimed there hit exactly one trial


def search(store, name, *args, fault=None, fault_dir=None, timeout=400, **popen):
    return helpers.search("--storage-path", store, "--name", name, *args, fault=fault, fault_dir=fault_dir,
                          timeout=timeout, popen=bool(popen), **popen)


def trials(store, name) -> pd.DataFrame:
    return pd.read_csv(Path(store) / name / "trials.csv")


def progress_epochs(store, name, trial_id) -> list[int]:
    """The epochs a trial reported, in order, from Ray's own result log."""
    trial_dir = next(p for p in (Path(store) / name).iterdir() if p.is_dir() and trial_id in p.name)
    return pd.read_json(trial_dir / "result.json", lines=True)["epoch"].tolist()


@pytest.mark.parametrize("kind", ["crash", "oom"])
def test_a_crashed_trial_is_retried_from_its_last_checkpoint(tmp_path, kind):
    # one trial at a time: the first trial reaches every ASHA rung alone, so ASHA never stops it
    r = search(tmp_path, kind, "--num-samples", "3", "--concurrency", "1", fault=f"{kind}@lr={WARM_LR};after=2;times=1", fault_dir=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = trials(tmp_path, kind)
    first = table[table.trial_index == 0].iloc[0]
    assert first["status"] == "completed" and first["epochs"] == SMOKE.epochs
    assert (tmp_path / f"fault-lr-{WARM_LR}").read_text() == "x"  # it did fail once
    # resumed after epoch 2, not restarted: epochs 1, 2, 3 reported once each
    assert progress_epochs(tmp_path, kind, first["trial_id"]) == [1, 2, 3]
    assert len(table) == 3 and "errored" not in set(table.status)


def test_a_trial_that_keeps_failing_is_recorded_as_errored_and_the_search_goes_on(tmp_path):
    r = search(tmp_path, "keeps", "--num-samples", "3", "--max-failures", "1", "--concurrency", "1",
               fault=f"crash@lr={WARM_LR};after=1;times=99", fault_dir=tmp_path)
    table = trials(tmp_path, "keeps")
    first = table[table.trial_index == 0].iloc[0]
    assert first["status"] == "errored" and "injected crash" in first["error"]
    assert (tmp_path / f"fault-lr-{WARM_LR}").read_text() == "xx"  # first try + one retry
    assert (table[table.trial_index > 0].status != "errored").all() and len(table) == 3
    assert r.returncode == 0 and "1 errored" in r.stdout
    assert "trial 0 errored: RuntimeError: injected crash after epoch 1" in r.stdout  # the reason, one line


def test_a_diverging_trial_is_stopped_recorded_and_never_wins(tmp_path):
    r = search(tmp_path, "nan", "--num-samples", "3", "--concurrency", "1", fault=f"diverge@lr={WARM_LR}", fault_dir=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = trials(tmp_path, "nan")
    first = table[table.trial_index == 0].iloc[0]
    assert first["status"] == "diverged" and first["epochs"] == 1
    from core.config import TrainConfig

    best = TrainConfig.load(tmp_path / "nan" / "best" / "config.yaml")
    assert best.lr != WARM_LR


def test_killed_driver_resumes_without_losing_or_repeating_trials(tmp_path):
    exp = tmp_path / "kill"
    proc = search(tmp_path, "kill", "--num-samples", "8", "--concurrency", "1", start_new_session=True)
    # kill -9 the driver and its local Ray cluster once two trials have finished
    finished = lambda: sum(1 for p in exp.glob("*/result.json") if len(p.read_text().splitlines()) >= 1) >= 3  # noqa: E731
    assert wait_for(finished, 240), "no trial finished in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    r = search(tmp_path, "kill", "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = trials(tmp_path, "kill")
    assert len(table) == 8 and sorted(table.trial_index) == list(range(8))
    assert set(table.status) <= {"completed", "stopped_early"}
    for trial_id in table.trial_id:  # restarted trials continued from their checkpoints: no epoch twice
        epochs = progress_epochs(tmp_path, "kill", trial_id)
        assert epochs == list(range(1, len(epochs) + 1)), (trial_id, epochs)
    assert_study_matches(exp, table)
    # no amnesia: ASHA's rungs were rebuilt on --resume, so it stopped the trials an uninterrupted search
    # fed the same results would have (with empty rungs it would have let some run on)
    from test_search import asha_replay

    assert asha_replay(exp) == dict(zip(table.trial_id, table.epochs))


def assert_study_matches(exp, table):
    """The SQLite study holds each trial once, finished, with the trials' own values."""
    import optuna

    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.trials) == len(table)
    assert all(t.state.is_finished() for t in study.trials), [t.state for t in study.trials]
    got = sorted((round(t.params["lr"], 12), round(t.params["drop_rate"], 12)) for t in study.trials)
    assert got == sorted((round(a, 12), round(b, 12)) for a, b in zip(table.lr, table.drop_rate))


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    exp = tmp_path / "int"
    proc = search(tmp_path, "int", "--num-samples", "8", "--concurrency", "1", start_new_session=True)
    assert wait_for(lambda: any(exp.glob("*/result.json")), 240)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode in (1, 130), out[-3000:]
    assert "--name int --resume" in out
    assert (exp / "trials.csv").is_file()
    r = search(tmp_path, "int", "--resume")
    assert r.returncode == 0 and len(trials(tmp_path, "int")) == 8
    assert_study_matches(exp, trials(tmp_path, "int"))


NODE_LOSS = r'''
import sys, threading, time, ray
from ray.cluster_utils import Cluster
from search import cluster as search_cluster, run
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
print("REUSE ACTORS", search_cluster.reuse_actors(None), flush=True)
def kill_later():  # once the first epoch has been reported, while trials are running
    import glob
    while not glob.glob(sys.argv[1] + "/node/*/checkpoint_000000"):
        time.sleep(0.2)
    time.sleep(float(sys.argv[2]))
    cluster.remove_node(worker, allow_graceful=False)
    print("NODE REMOVED", flush=True)
threading.Thread(target=kill_later, daemon=True).start()
code = run.main(["--space", "smoke", "--no-dashboard", "--storage-path", sys.argv[1], "--name", "node",
                 "--num-samples", "8", "--concurrency", "2", "--max-failures", "3"])
print("MAIN RETURNED", code, flush=True)
ray.shutdown()
cluster.shutdown()
'''


def test_trials_on_a_lost_node_are_rescheduled_from_their_checkpoints(tmp_path):
    r = subprocess.run([sys.executable, "-c", NODE_LOSS, str(tmp_path), "1"], capture_output=True, text=True,
                       env=ENV, timeout=500)
    assert "NODE REMOVED" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    # on two nodes every trial gets a fresh worker (Ray 2.60 errors a trial handed a cached actor whose
    # node died, rather than retrying it)
    assert "REUSE ACTORS False" in r.stdout
    # (the harness's own exit code reflects Ray's teardown of a cluster that lost a node)
    assert "MAIN RETURNED 0" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    table = trials(tmp_path, "node")
    assert len(table) == 8 and set(table.status) <= {"completed", "stopped_early"}
    # Whether the removed node held a running trial at that moment depends on timing (it did in 2 of 3
    # observed runs); what is asserted is that the search survives the loss with every trial intact.
    for trial_id in table.trial_id:
        epochs = progress_epochs(tmp_path, "node", trial_id)
        assert epochs == list(range(1, len(epochs) + 1)), (trial_id, epochs)
