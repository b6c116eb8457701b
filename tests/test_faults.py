"""Reliability: injected faults (crash, OOM, divergence, driver kill, Ctrl-C, lost node) and bad input.

Faults go in through the trainable's test-only hook (BIRDTUNE_TEST_FAULT), never a user flag.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import spaces
from search import run as search_run

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
SMOKE = spaces.get("smoke")
WARM_LR = SMOKE.points[0]["lr"]  # the first trial's lr: faults aimed there hit exactly one trial


def search(store, name, *args, fault=None, fault_dir=None, timeout=400, **popen):
    env = dict(ENV)
    if fault:
        env.update(BIRDTUNE_TEST_FAULT=fault, BIRDTUNE_TEST_FAULT_DIR=str(fault_dir))
    cmd = [sys.executable, "-m", "search.run", "--space", "smoke", "--no-dashboard", "--storage-path", str(store),
           "--name", name, *args]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


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


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_killed_driver_resumes_without_losing_or_repeating_trials(tmp_path):
    exp = tmp_path / "kill"
    proc = search(tmp_path, "kill", "--num-samples", "8", "--concurrency", "1", start_new_session=True)
    # kill -9 the driver and its local Ray cluster once two trials have finished
    finished = lambda: sum(1 for p in exp.glob("*/result.json") if len(p.read_text().splitlines()) >= 1) >= 3  # noqa: E731
    assert _wait_for(finished, 240), "no trial finished in time"
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
    assert _wait_for(lambda: any(exp.glob("*/result.json")), 240)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode in (1, 130), out[-3000:]
    assert f"--name int --resume" in out
    assert (exp / "trials.csv").is_file()
    r = search(tmp_path, "int", "--resume")
    assert r.returncode == 0 and len(trials(tmp_path, "int")) == 8
    assert_study_matches(exp, trials(tmp_path, "int"))


NODE_LOSS = r'''
import sys, threading, time, ray
from ray.cluster_utils import Cluster
from search import run
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
print("REUSE ACTORS", run.reuse_actors(None), flush=True)
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


# ------------------------------------------------------------------------------------------------
def _csv(tmp_path, rows=None, images=True, corrupt=False):
    import cv2
    import numpy as np

    d = tmp_path / "data"
    (d / "img").mkdir(parents=True, exist_ok=True)
    rows = rows or _rows()
    if images:
        for k in range(6):
            cv2.imwrite(str(d / "img" / f"x{k}.png"), np.full((32, 64), 30 * k, np.uint8))
    if corrupt:
        (d / "img" / "x3.png").write_bytes(b"\x89PNG broken")
    pd.DataFrame(rows).to_csv(d / "train.csv", index=False)
    return d / "train.csv"


def _rows(**change):
    rows = [dict(image_path=f"img/x{k}.png", label=k % 2, label_name="ab"[k % 2], group=f"g{k}", fold=float(k % 2))
            for k in range(6)]
    for k, v in change.items():
        for r, value in zip(rows, v):
            r[k] = value
    return rows


BAD_INPUTS = [
    # (name, csv builder or None for the demo, extra args, message)
    ("missing CSV", None, ["--csv", "nowhere/train.csv"], "CSV not found"),
    ("CSV is a folder", None, ["--csv", "{tmp}"], "CSV not found"),
    ("missing columns", lambda t: _csv(t, rows=[{"path": "img/x0.png", "y": 0}]), [], "lacks column(s) image_path, label, fold"),
    ("non-integer labels", lambda t: _csv(t, rows=_rows(label=[0, "b", 0, 1, 0, 1])), [], "column 'label' must hold integers"),
    ("negative labels", lambda t: _csv(t, rows=_rows(label=[0, -1, 0, 1, 0, 1])), [], "negative labels"),
    ("labels above num_classes", lambda t: _csv(t, rows=_rows(label=[0, 5, 0, 1, 0, 1])), ["--set", "num_classes=3"],
     "label(s) outside 0..2"),
    ("missing images", lambda t: _csv(t, images=False), [], "6 image(s) not found"),
    ("corrupt image", lambda t: _csv(t, corrupt=True), [], "1 image(s) could not be decoded"),
    ("fold with no rows", lambda t: _csv(t), ["--set", "fold=4"], "fold 4 has no rows to validate on"),
    ("unknown space", None, ["--space", "nope"], "unknown space 'nope'"),
    ("unknown --set key", None, ["--set", "learning_rate=1"], "unknown config key 'learning_rate'"),
    ("wrong value type", None, ["--set", "batch_size=big"], "batch_size must be int"),
    ("lr <= 0", None, ["--set", "lr=0"], "lr must be > 0, got 0.0"),
    ("dropout outside [0, 1)", None, ["--set", "drop_rate=1.0"], "drop_rate must be in [0, 1)"),
    ("searched key fixed by --set", None, ["--set", "lr=0.01"], "--set lr fixes a value the 'smoke' space searches"),
    ("drop_path out of range", None, ["--set", "drop_path_rate=1.0"], "drop_path_rate must be in [0, 1)"),
    ("cap < floor", lambda t: _csv(t), ["--set", "class_cap=10", "--set", "class_floor=20"], "class_cap (10) must be >= class_floor (20)"),
    ("unknown timm model", lambda t: _csv(t), ["--set", "model_name=efficientnet_b99"], "unknown timm model 'efficientnet_b99'"),
    ("fractional CPUs", None, ["--cpus-per-trial", "0.5"], "--cpus-per-trial must be a whole number"),
    ("too many CPUs", None, ["--cpus-per-trial", "4096"], "but the cluster has"),
    ("negative GPUs", None, ["--gpus-per-trial", "-0.5"], "--gpus-per-trial must be >= 0"),
    ("GPUs on a CPU machine", None, ["--gpus-per-trial", "0.25"], "no GPU is visible"),
    ("unreachable address", None, ["--address", "127.0.0.1:9"], "cannot reach a Ray cluster at 127.0.0.1:9"),
    ("malformed address", None, ["--address", "nowhere"], "--address must be auto, host:port"),
    ("unwritable storage", None, ["--storage-path", "{file}/sub"], "is not writable"),
    ("checkpoint not ours", lambda t: _csv(t), ["--set", "init_checkpoint={pickle}"], "holds pickled Python objects"),
    ("missing checkpoint", lambda t: _csv(t), ["--set", "init_checkpoint={tmp}/none.pt"], "checkpoint not found"),
    ("zero trials", None, ["--num-samples", "0"], "--num-samples must be >= 1"),
    ("resume without a name", None, ["--resume"], "--resume needs --name"),
    ("open dashboard without auth", None, ["--dashboard-host", "0.0.0.0"], "RAY_AUTH_MODE=disabled"),
    ("finetune without a checkpoint", lambda t: _csv(t), ["--space", "finetune"],
     "fine-tunes a bird-pretrained checkpoint and none is set for your data: pass --set init_checkpoint="),
    ("pretrained weights out of reach", lambda t: _csv(t), [],
     "pretrained=true needs timm's ImageNet weights for 'tf_efficientnet_b0.ns_jft_in1k'"),
]


@pytest.mark.parametrize("name,make_csv,args,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_before_ray_with_one_line(name, make_csv, args, message, tmp_path, capsys, monkeypatch):
    import torch

    (tmp_path / "file").write_text("x")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")  # a pickled module, as the notebook saves
    args = [a.format(tmp=tmp_path, file=tmp_path / "file", pickle=tmp_path / "whole.pth") for a in args]
    if name == "open dashboard without auth":
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    if name == "pretrained weights out of reach":  # an empty cache and no hub, as on an offline machine
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name == "GPUs on a CPU machine" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    store = tmp_path / "results"
    store.mkdir()
    argv = ["--storage-path", str(store)] if "--storage-path" not in args else []
    if "--space" not in args:
        argv += ["--space", "smoke"]
    if make_csv is not None:
        argv += ["--csv", str(make_csv(tmp_path))]
        if name != "pretrained weights out of reach":  # user data: the default model would need the hub
            argv += ["--set", "pretrained=false"]
    if "--dashboard-host" not in args:
        argv += ["--no-dashboard"]
    code = search_run.main(argv + args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and "Ray dashboard" not in out
    assert list(store.iterdir()) == []  # nothing under results/ changed
    if "ray" in sys.modules:
        import ray

        assert not ray.is_initialized()


def test_a_non_loopback_dashboard_is_warned_about(tmp_path, capsys):
    args = search_run.parse_args(["--dashboard-host", "0.0.0.0"])
    search_run._check_dashboard_host(args)
    assert "anyone who reaches it" in capsys.readouterr().err
