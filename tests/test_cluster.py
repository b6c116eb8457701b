"""A real multi-node Ray cluster on loopback, as users run one: `ray start --head` plus a second node joined
with `ray start --address` (one CPU each, distinct ports, token authentication on), results in S3 (moto's
server on loopback). A search submitted with `ray job submit`; a search joined with --address that loses
a node midway."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import helpers
import s3server

ROOT = Path(__file__).resolve().parents[1]
RAY = os.path.join(os.path.dirname(sys.executable), "ray")  # the venv's, activated or not


def node_ports() -> list[str]:
    """Every port a node opens, free ones, so that two nodes share one machine."""
    flags = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    lo, hi = helpers.worker_ports()  # a private worker port range per node
    return [f"{f}={helpers.free_port()}" for f in flags] + [f"--min-worker-port={lo}", f"--max-worker-port={hi}"]


class Cluster:
    def __init__(self, env: dict[str, str], num_cpus: int = 1, num_gpus: int = 0):
        self.env = {**env, "RAY_AUTH_MODE": "token", "PATH": f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"}
        self.tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
        self.port, self.dashboard = helpers.free_port(), helpers.free_port()
        self.head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
             f"--num-gpus={num_gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard}",
             f"--ray-client-server-port={helpers.free_port()}", f"--temp-dir={self.tmp}", *node_ports()],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        assert helpers.wait_for(lambda: helpers.listening(self.dashboard), 120), "the head did not start"
        self.worker = None

    def add_worker(self) -> None:
        """A second node, joined as on another machine: `ray start --address`."""
        log = Path(self.tmp) / "worker.log"
        with open(log, "w") as out:
            self.worker = subprocess.Popen(
                [RAY, "start", "--block", f"--address=127.0.0.1:{self.port}", "--node-ip-address=127.0.0.1",
                 "--num-cpus=1", *node_ports()],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        joined = helpers.wait_for(lambda: self.alive_nodes() == 2, 120)
        raylets = sorted(Path(self.tmp).glob("session_latest/logs/raylet*.err"))
        assert joined, ("the second node did not join; `ray start` printed:\n" + log.read_text()[-3000:]
                        + "".join(f"\n{p.name}:\n{p.read_text()[-1500:]}" for p in raylets))

    def alive_nodes(self) -> int:
        r = subprocess.run([RAY, "list", "nodes", "--address", f"http://127.0.0.1:{self.dashboard}", "--format", "json"],
                           capture_output=True, text=True, env=self.env, timeout=60)
        try:
            return sum(1 for n in json.loads(r.stdout) if n.get("state") == "ALIVE")
        except ValueError:  # 'No resource in the cluster' while it starts
            return 0

    def stop_worker(self) -> None:
        self.worker.terminate()  # `ray start --block` stops the node's processes when it is terminated
        self.worker.wait(timeout=120)

    def shutdown(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    server = s3server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(s3):
    c = Cluster(s3.env())
    yield c
    c.shutdown()


def node_ids(s3, prefix: str) -> dict[str, set[str]]:
    """trial folder -> the node ids its results came from (result.json in the bucket). While the search runs,
    Ray may have uploaded a trial's result.json before its first line: such a file has no ids yet."""
    out = {}
    for key in s3.keys(prefix):
        if key.endswith("/result.json"):
            try:
                rows = pd.read_json(io.BytesIO(s3.read(key)), lines=True)
            except ValueError:  # a line cut off mid-upload
                continue
            if "node_id" in rows:
                out[key.split("/")[-2]] = set(rows["node_id"].dropna())
    return out


@pytest.mark.slow
def test_a_search_submitted_as_a_ray_job_with_token_auth(cluster, s3):
    store = s3.uri("jobs")
    submit = [RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard}", "--working-dir", ".",
              "--submission-id", "birdtune-job", "--", "python", "-m", "search.run", "--address", "auto",
              "--space", "smoke", "--storage-path", store, "--name", "job", "--num-samples", "4"]
    r = subprocess.run(submit, capture_output=True, text=True, env=cluster.env, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    logs = subprocess.run([RAY, "job", "logs", "--address", f"http://127.0.0.1:{cluster.dashboard}", "birdtune-job"],
                          capture_output=True, text=True, env=cluster.env, timeout=120)
    assert logs.returncode == 0 and "4/4 trial" in logs.stdout and "best: trial" in logs.stdout, logs.stdout[-3000:]
    assert "worker processes fresh per trial" in logs.stdout  # joined (--address auto): no cached workers
    table = helpers.read_table(io.BytesIO(s3.read("jobs/job/trials.csv")))
    assert len(table) == 4 and "jobs/job/best/model.pt" in s3.keys("jobs/job/best/")
    # one trial at a time on the one-CPU head, each in a process of its own
    pids = {int(p) for key in s3.keys("jobs/job/") if key.endswith("/progress.csv")
            for p in pd.read_csv(io.BytesIO(s3.read(key)))["pid"]}
    assert len(pids) == 4, pids
    # without the token the dashboard's API refuses the job
    anonymous = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE",)}
    anonymous["HOME"] = tempfile.mkdtemp()  # no ~/.ray/auth_token
    r = subprocess.run([RAY, "job", "list", "--address", f"http://127.0.0.1:{cluster.dashboard}"],
                       capture_output=True, text=True, env=anonymous, timeout=120)
    assert r.returncode == 1 and "birdtune-job" not in r.stdout, r.stdout[-1000:]
    assert "Authentication required: Unauthorized: Missing authentication token" in r.stderr, r.stderr[-1000:]


@pytest.mark.slow
def test_a_search_uses_both_nodes_and_survives_losing_one(cluster, s3, tmp_path):
    cluster.add_worker()
    store = s3.uri("nodes")
    proc = helpers.search("--address", f"127.0.0.1:{cluster.port}", "--storage-path", store, "--name", "n",
                          "--num-samples", "6", "--max-failures", "3", env=cluster.env, cwd=tmp_path, popen=True)
    try:
        assert helpers.wait_for(lambda: len(set().union(*node_ids(s3, "nodes/n/").values() or [set()])) >= 2, 300,
                                every=1), "trials never ran on both nodes"
        cluster.stop_worker()
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    table = helpers.read_table(io.BytesIO(s3.read("nodes/n/trials.csv")))
    assert len(table) == 6 and set(table.status) <= {"completed", "stopped_early"}, table
    for key in s3.keys("nodes/n/"):  # trials on the lost node continued from their checkpoints: no epoch twice
        if key.endswith("/result.json"):
            epochs = pd.read_json(io.BytesIO(s3.read(key)), lines=True)["epoch"].tolist()
            assert epochs == list(range(1, len(epochs) + 1)), (key, epochs)
    assert len(set().union(*node_ids(s3, "nodes/n/").values())) == 2


@pytest.mark.slow
def test_four_trials_share_a_declared_gpu_on_a_separately_started_cluster_with_a_file_uri(tmp_path):
    """Fractional packing on this CPU machine: a head that declares one GPU, --gpus-per-trial 0.25. Ray gives
    every trial the same device (CUDA_VISIBLE_DEVICES=0); the trials train on the CPU, as torch sees no
    CUDA (on a GPU machine each would also cap its memory at 0.25 of the GPU: tests/test_amp.py). The
    results go to a file:// URI, the storage form for a shared file system."""
    c = Cluster(helpers.ENV, num_cpus=4, num_gpus=1)
    store = tmp_path / "r"
    try:
        r = helpers.search("--address", f"127.0.0.1:{c.port}", "--storage-path", f"file://{store}", "--name", "g",
                           "--num-samples", "4", "--epochs", "8", "--scheduler", "none", "--gpus-per-trial", "0.25",
                           "--set", "device=cpu",  # Ray's GPU, torch's CPU: this machine has no CUDA
                           env=c.env, cwd=tmp_path, timeout=600)
    finally:
        c.shutdown()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "4 trials of up to 8 epochs, 4 at a time (1 CPU, 0.25 GPU each" in r.stdout, r.stdout[:2000]
    exp = store / "g"
    assert len(helpers.read_table(exp / "trials.csv")) == 4 and (exp / "best" / "model.pt").is_file()
    meta = yaml.safe_load((exp / "search.yaml").read_text())
    assert meta["space"] == "smoke" and meta["max_t"] == 8
    # a joined cluster may lose nodes: no cached workers there (see search.cluster.reuse_actors; the job
    # test checks the processes)
    assert "worker processes fresh per trial" in r.stdout
    spans = []
    for log in exp.glob("*/result.json"):
        rows = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines() if line.strip()])  # timestamp: Unix s
        assert rows["epoch"].tolist() == list(range(1, 9)) and set(rows["cuda_visible_devices"].astype(str)) == {"0"}
        spans.append((rows["timestamp"].iloc[0] - rows["time_this_iter_s"].iloc[0], rows["timestamp"].iloc[-1]))
    assert len(spans) == 4
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # all four were running at one moment


def test_a_non_loopback_dashboard_is_warned_about(capsys):
    from search import cluster

    cluster.check_dashboard_host(False, None, "0.0.0.0")
    assert "anyone who reaches it" in capsys.readouterr().err
    cluster.check_dashboard_host(False, None, "127.0.0.1")  # loopback, or no dashboard: nothing to say
    cluster.check_dashboard_host(True, None, "0.0.0.0")
    assert capsys.readouterr().err == ""


def test_untested_ray_or_optuna_releases_are_named_in_one_line(monkeypatch):
    import importlib.metadata

    from search import cluster, layout

    assert cluster.untested_versions() is None  # the installed ones are the tested ones
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "5.1.0" if n == "optuna" else real(n))
    line = cluster.untested_versions()
    assert line and "\n" not in line and "Optuna 5.1.0" in line and "Ray 2.60 and Optuna 5.0" in line
    assert layout.TESTED_VERSIONS == {"ray": "2.60", "optuna": "5.0"}
