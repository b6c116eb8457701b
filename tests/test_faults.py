"""Reliability: injected faults (crash, OOM, divergence, driver kill, Ctrl-C, lost node).

Faults go in through tests/faults.py, which hands search.run.main a TrialHooks; the product has no fault
hook of its own. Bad input: tests/test_bad_input.py.
"""
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import spaces
from helpers import ENV, read_table

import helpers

pytestmark = pytest.mark.slow
SMOKE = spaces.get("smoke")
WARM_LR = SMOKE.points[0]["lr"]  # the first trial's lr: faults aimed there hit exactly one trial


def search(store, name, *args, fault=None, fault_dir=None, chaos=None, timeout=400, env=ENV, **popen):
    """The search, finished; with popen arguments (start_new_session=...) the running process."""
    return helpers.search("--storage-path", store, "--name", name, *args, fault=fault, fault_dir=fault_dir,
                          chaos=chaos, timeout=timeout, popen=bool(popen), env=env, **popen)


def trials(store, name) -> pd.DataFrame:
    return read_table(Path(store) / name / "trials.csv")


def progress_epochs(store, name, trial_id) -> list[int]:
    """The epochs a trial reported, in order, from Ray's own result log."""
    trial_dir = next(p for p in (Path(store) / name).iterdir() if p.is_dir() and trial_id in p.name)
    return pd.read_json(trial_dir / "result.json", lines=True)["epoch"].tolist()


# One search, one trial at a time, no early stopping, each fault aimed at its own trial (by launch order):
# trial 0 diverges (the space's warm-start point, which wins this search when it trains), 1 crashes and 2
# runs out of memory once each after epoch 3 (of 4), 3 crashes after every epoch from 1 on, 4 trains untouched.
# Ray saves its state only at the start (TUNE_GLOBAL_CHECKPOINT_S), and on its own after every second
# checkpoint of a trial: its copy of a trial's result.json in storage is then 2 epochs behind the driver's at
# epoch 3, as it may be at any moment in a real search.
FAULTS = "diverge@trial=0|crash@trial=1;after=3|oom@trial=2;after=3|crash@trial=3;after=1;times=99"
EPOCHS = 4


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    store = tmp_path_factory.mktemp("faults")
    r = search(store, "f", "--num-samples", "5", "--concurrency", "1", "--scheduler", "none", "--max-failures", "1",
               "--epochs", EPOCHS, fault=FAULTS, fault_dir=store, env={**ENV, "TUNE_GLOBAL_CHECKPOINT_S": "3600"})
    return store, r, trials(store, "f")


@pytest.mark.parametrize("kind,index", [("crash", 1), ("oom", 2)])
def test_a_crashed_trial_is_retried_from_its_last_checkpoint(faulty, kind, index):
    store, r, table = faulty
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trial = table[table.trial_index == index].iloc[0]
    assert trial["status"] == "completed" and trial["epochs"] == EPOCHS, table
    assert (store / f"fault-trial-{index}").read_text() == "x"  # it did fail once
    # continued after epoch 3, not restarted, and epoch 3 kept in its result.json (Ray's logger restarts the
    # file from storage's copy, which had only epochs 1-2: [1, 2, 4] before the driver's copy went first)
    assert progress_epochs(store, "f", trial["trial_id"]) == [1, 2, 3, 4]
    assert len(table) == 5


def test_a_trial_that_keeps_failing_is_recorded_as_errored_and_the_search_goes_on(faulty):
    store, r, table = faulty
    trial = table[table.trial_index == 3].iloc[0]
    assert trial["status"] == "errored" and "injected crash" in trial["error"]
    assert (store / "fault-trial-3").read_text() == "xx"  # first try + one retry (--max-failures 1)
    assert (table[table.trial_index != 3].status != "errored").all() and len(table) == 5
    assert (table[table.trial_index == 4].status == "completed").all()  # the search went on after it
    assert r.returncode == 0 and "1 errored" in r.stdout
    assert "trial 3 errored: RuntimeError: injected crash after epoch 1" in r.stdout  # the reason, one line


def test_a_diverging_trial_is_stopped_recorded_and_never_wins(faulty):
    store, r, table = faulty
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    first = table[table.trial_index == 0].iloc[0]
    assert first["status"] == "diverged" and first["epochs"] == 1 and first["lr"] == pytest.approx(WARM_LR)
    from core.config import TrainConfig

    best = TrainConfig.load(store / "f" / "best" / "config.yaml")
    assert best.lr != WARM_LR


# One search stopped three times, each followed by the same command with --resume (tests/stops.py stops it).
# Ray saves its state only at the start of each run (TUNE_GLOBAL_CHECKPOINT_S), so every stop finds it
# behind what the driver did, as a stop between two of Ray's saves (10 s or more apart) does in a real search.
STOPS = ["int:result@1",  # Ctrl-C right after the first result
         "done@1",  # SIGKILL of the driver's process group right after the first result that ends a trial
         "worker@1+checkpoint@3"]  # a trial's worker killed; then the driver, while a checkpoint is written
INTERRUPTED_TRIALS = 8


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    store = tmp_path_factory.mktemp("interrupted")
    env = {**ENV, "TUNE_GLOBAL_CHECKPOINT_S": "3600"}
    runs, tables = [], []
    for i, moment in enumerate(STOPS + ["none"]):
        args = ["--resume"] if i else ["--num-samples", str(INTERRUPTED_TRIALS)]
        proc = search(store, "ck", *args, chaos=moment, fault_dir=store / f"chaos-{i}", start_new_session=True, env=env)
        out, _ = proc.communicate(timeout=400)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
        runs.append(r)
        tables.append((store / "ck" / "trials.csv").is_file() and trials(store, "ck"))
        assert moment == "none" or r.returncode != 0, f"{moment} was not reached: {r.stdout[-2000:]}"
    return store / "ck", runs, tables


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(interrupted):
    exp, runs, tables = interrupted
    ctrl_c = runs[0]
    assert ctrl_c.returncode in (1, 130), ctrl_c.stdout[-3000:] + ctrl_c.stderr[-3000:]
    assert "--name ck --resume" in ctrl_c.stdout
    assert tables[0] is not False and 1 <= len(tables[0]) < INTERRUPTED_TRIALS  # its trials, written at the stop
    assert runs[-1].returncode == 0 and len(trials(exp.parent, "ck")) == INTERRUPTED_TRIALS
    # the trial Ctrl-C cut was restarted by the resume: it is no longer one the search ended around
    cut = tables[0].trial_id[tables[0].status == "unfinished"].tolist()
    assert cut and not set(cut) & set((exp / "cut_trials.txt").read_text().split())


def test_a_driver_killed_anywhere_resumes_without_losing_or_repeating_trials(interrupted):
    """The issue's moment (SIGKILL right after a trial's last result, Ray's state behind) left a trial errored
    (UpdateFinishedTrialError) and a config run twice as two trials; and a stopped trial ran on."""
    exp, runs, _ = interrupted
    from stops import check

    assert [r.returncode for r in runs[1:3]] == [-signal.SIGKILL] * 2, [r.stdout[-2000:] for r in runs]
    assert runs[-1].returncode == 0, runs[-1].stdout[-3000:] + runs[-1].stderr[-3000:]
    # every trial accounted for, none errored or run twice, epochs 1..n once each, optuna.db = trials.csv,
    # the exported best = the journal's, ASHA's decisions replay from the journal
    assert check(exp, INTERRUPTED_TRIALS) == []
    for r in runs[1:]:  # each resume said what it found, and nothing from Optuna or Ray
        assert "birdtune: resuming" in r.stdout, r.stdout[-2000:]
        assert not re.search(r"^\[[IWE] \d{4}-|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING)",
                             r.stdout + r.stderr, re.M), r.stdout + r.stderr
    # Ray's saved state missed what each SIGKILL interrupted: the journal filled it in
    assert "since Ray's last saved state" in runs[2].stdout and "since Ray's last saved state" in runs[3].stdout


NODE_LOSS = r'''
import glob, json, os, sys, threading, time, ray
from ray.cluster_utils import Cluster
from search import cluster as search_cluster, run
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
print("REUSE ACTORS", search_cluster.reuse_actors(None), flush=True)
def on_worker():
    # a trial whose newest recorded epoch ran on the worker node and left a checkpoint
    for log in glob.glob(sys.argv[1] + "/node/*/result.json"):
        rows = [json.loads(x) for x in open(log).read().splitlines() if x.strip() and x.endswith("}")]
        if rows and rows[-1].get("node_id") == worker.node_id and rows[-1]["epoch"] < int(sys.argv[2]) \
                and glob.glob(os.path.dirname(log) + "/checkpoint_*"):
            return os.path.basename(os.path.dirname(log)), rows[-1]["epoch"]
def kill_later():  # while a trial is running on the worker node, past its first checkpoint
    while not (hit := on_worker()):
        time.sleep(0.05)
    cluster.remove_node(worker, allow_graceful=False)
    # one write: Ray's log thread prints the workers' lines to this stdout meanwhile, and print() writes each
    # argument on its own (a worker's line once landed inside this one)
    sys.stdout.write(f"NODE REMOVED {worker.node_id} {hit[0]} {hit[1]}\n")
    sys.stdout.flush()
threading.Thread(target=kill_later, daemon=True).start()
code = run.main(["--space", "smoke", "--no-dashboard", "--storage-path", sys.argv[1], "--name", "node",
                 "--num-samples", "4", "--epochs", sys.argv[2], "--scheduler", "none", "--concurrency", "2",
                 "--max-failures", "3"])
print("MAIN RETURNED", code, flush=True)
ray.shutdown()
cluster.shutdown()
'''


def test_a_trial_running_on_a_lost_node_continues_from_its_checkpoint_on_the_other(tmp_path):
    epochs = 6  # no early stopping and six epochs: the trial found running on the worker is still running
    r = subprocess.run([sys.executable, "-c", NODE_LOSS, str(tmp_path), str(epochs)], capture_output=True,
                       text=True, env=ENV, timeout=500)
    removed = re.findall(r"NODE REMOVED (\S+) (\S+) (\d+)\n", r.stdout)
    assert removed, r.stdout[-3000:] + r.stderr[-3000:]
    lost_node, victim, last_seen = removed[0][0], removed[0][1], int(removed[0][2])
    # on two nodes every trial gets a fresh worker (Ray 2.60 errors a trial handed a cached actor whose
    # node died, rather than retrying it)
    assert "REUSE ACTORS False" in r.stdout
    # (the harness's own exit code reflects Ray's teardown of a cluster that lost a node)
    assert "MAIN RETURNED 0" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    table = trials(tmp_path, "node")
    assert len(table) == 4 and set(table.status) == {"completed"}
    # the victim's own records: epochs 1..k on the lost node, then on the other, continuing after its last
    # checkpoint there (none lost, no restart from the start)
    rows = pd.read_json(tmp_path / "node" / victim / "result.json", lines=True)
    on_lost = (rows.node_id == lost_node).tolist()
    k = sum(on_lost)  # epochs it reported there (results in flight while the node went count too)
    assert last_seen <= k < epochs and on_lost == [True] * k + [False] * (len(rows) - k), rows[["epoch", "node_id"]]
    assert rows["epoch"].tolist()[:k] == list(range(1, k + 1)), rows[["epoch", "node_id"]]
    after = rows["epoch"].tolist()[k:]
    # it resumed from the checkpoint of its last epoch there: none lost, none run twice (Ray registers a
    # reported checkpoint in a second round trip to the trial; a node lost in between left the previous one
    # registered until recovery.RepairCheckpoints took the one the last result names)
    assert after == list(range(k + 1, epochs + 1)), rows[["epoch", "node_id"]]
    # Ray's own count restarts at the restore
    assert rows.iloc[k]["iterations_since_restore"] == 1 and rows.iloc[k - 1]["iterations_since_restore"] == k
    for trial_id in table.trial_id:  # every trial, the victim too: each epoch once
        got = progress_epochs(tmp_path, "node", trial_id)
        assert got == list(range(1, epochs + 1)), (trial_id, got)


def test_the_tail_fill_continues_stopped_trials_from_their_checkpoints_while_the_last_trial_runs(tmp_path):
    # 4 trials, 2 at a time, 8 epochs (rungs 1, 2, 4). The warm start is slowed to 4 s an epoch and leads
    # (cmAP 0.99: ASHA never stops it), so it runs long after the other three have started and ended: the tail.
    # Past rung 4 it is bound to run 4 more epochs, 16 s and more: room for a restart even on a loaded machine.
    r = search(tmp_path, "tail", "--num-samples", "4", "--concurrency", "2", "--epochs", "8", "--tail-fill", "on",
               fault=f"slow@lr={WARM_LR};seconds=4;lead=1", fault_dir=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "tail fill on (--tail-fill on)" in r.stdout
    from search import journal

    events = journal.read(str(tmp_path / "tail" / "results_log.jsonl"))
    results = journal.results(events)
    table = trials(tmp_path, "tail")
    slow = table[table.lr == WARM_LR].iloc[0]
    assert slow["status"] == "completed" and slow["epochs"] == 8 and len(table) == 4, table
    continued = {}
    for tid in set(table.trial_id) - {slow["trial_id"]}:
        mine = [e for e in results if e["trial_id"] == tid]
        stop = next(i for i, e in enumerate(mine) if e["done"])  # where ASHA stopped it first
        if stop + 1 < len(mine):
            continued[tid] = mine
            # from its checkpoint: the epochs go on from where it stopped, none repeated, none lost
            assert [e["epoch"] for e in mine] == list(range(1, len(mine) + 1)), mine
            assert mine[stop]["epoch"] < 8
            # (that the fill ends with the search's own last trial is checked on scripted clocks, in
            # tests/test_scheduler.py and tests/test_replay.py: here a restart slower than measured may carry a
            # continued epoch a few seconds past it, as docs/search.md says)
            assert table[table.trial_id == tid].epochs.iloc[0] == len(mine)  # the table has what it reached
            assert f"continued from epoch {mine[stop]['epoch']}" in r.stdout
    assert continued, r.stdout[-3000:]
    # each trial counted once in the live lines, a continued one as it ends again
    done = [int(n) for n in re.findall(r"\] +(\d+)/4 trial", r.stdout)]
    assert max(done) == 4 and sorted(set(done)) == [1, 2, 3, 4], r.stdout[-3000:]
    assert "4 trials (" in r.stdout


def test_with_a_budget_asha_pauses_a_trial_and_continues_it_from_its_checkpoint_when_promoted(tmp_path):
    # --epoch-budget with no trial count: ASHA pauses every trial at its rungs until it ranks among the best
    # half there (smoke: rungs 1 and 2, reduction 2). The warm start leads (cmAP 0.99): alone at rung 1 it
    # pauses, and once a second trial is recorded there it is promoted, on the one worker, before a new trial.
    r = search(tmp_path, "promo", "--epoch-budget", "10", "--concurrency", "1",
               fault=f"slow@lr={WARM_LR};seconds=0;lead=1", fault_dir=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from search import journal

    events = journal.read(str(tmp_path / "promo" / "results_log.jsonl"))
    table = trials(tmp_path, "promo")
    warm = table[table.lr == WARM_LR].iloc[0]
    mine = [e for e in journal.results(events) if e["trial_id"] == warm["trial_id"]]
    # paused at epoch 1 (its result ended the trial), then on from its checkpoint: no epoch repeated or lost
    assert mine[0]["epoch"] == 1 and mine[0]["done"] and len(mine) >= 2, mine
    assert [e["epoch"] for e in mine] == list(range(1, len(mine) + 1)) and warm["epochs"] == len(mine)
    assert f"trial {warm['trial_index']:>3} continued from epoch 1 promoted: among the best of its rung" in r.stdout
    assert table.epochs.sum() <= 10 + 1 and "of 10 trial-epochs (the budget ended the search)" in r.stdout
    assert re.search(r"\d+ trials \(.*\), \d+ of them continued from (its checkpoint|their checkpoints) after", r.stdout)
    import yaml

    best = yaml.safe_load((tmp_path / "promo" / "best" / "config.yaml").read_text())
    assert best["lr"] == pytest.approx(WARM_LR)  # the continued trial's best epoch is exported
