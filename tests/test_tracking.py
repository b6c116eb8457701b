"""--log-to: a smoke search logged to a real MLflow server (SQLite backend, loopback), TensorBoard event files
read back, and W&B in offline mode; and the one-line refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import helpers
from search import tracking


def test_bad_targets_are_refused_in_one_line(monkeypatch):
    with pytest.raises(ValueError, match="unknown target 'neptune'; choose from mlflow"):
        tracking.parse("mlflow,neptune")
    with pytest.raises(ValueError, match="names mlflow twice"):
        tracking.parse("mlflow,mlflow=sqlite:///x.db")
    with pytest.raises(ValueError, match="tensorboard takes no value"):
        tracking.parse("tensorboard=logs")
    port = helpers.free_port()
    with pytest.raises(ValueError, match=f"mlflow=http://127.0.0.1:{port}: no MLflow server answers there"):
        tracking.parse(f"mlflow=http://127.0.0.1:{port}")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"--log-to wandb needs the wandb package: pip install -e '\.\[tracking\]'"):
        tracking.parse("wandb")
    assert tracking.parse("tensorboard,mlflow=sqlite:///x.db") == [tracking.Target("tensorboard"),
                                                                   tracking.Target("mlflow", "sqlite:///x.db")]


@pytest.fixture
def mlflow_server(tmp_path):
    pytest.importorskip("mlflow")
    port = helpers.free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=tmp_path, env=helpers.ENV)
    try:
        assert helpers.wait_for(lambda: helpers.listening(port), 120), "mlflow server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_search_logged_to_mlflow_tensorboard_and_wandb(mlflow_server, tmp_path):
    pytest.importorskip("wandb")
    env = {**helpers.ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / "wb")}
    r = helpers.search("--storage-path", str(tmp_path / "r"), "--name", "t", "--num-samples", "4", "--log-to",
                       f"mlflow={mlflow_server},tensorboard,wandb=birds", env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"logging to MLflow experiment 't' at {mlflow_server}" in r.stdout
    assert "logging to W&B project 'birds', group 't' (offline)" in r.stdout
    exp = tmp_path / "r" / "t"
    table = helpers.read_table(exp / "trials.csv")
    best = table.loc[table["best_cmap"].idxmax(), "trial_id"]

    # MLflow: one run per trial with its values, every epoch's cmAP, its birdtune status; the best one tagged
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("t")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and experiment.tags["birdtune.best_trial_id"] == best
    seen = set()
    for run in runs:
        trial_id = next(t for t in table.trial_id if run.data.tags["trial_name"].endswith(t))
        row = table[table.trial_id == trial_id].iloc[0]
        seen.add(trial_id)
        assert float(run.data.params["lr"]) == pytest.approx(row["lr"]) and run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "cmap")
        assert len(history) == row["epochs"] and max(m.value for m in history) == pytest.approx(row["best_cmap"])
        assert run.data.tags["birdtune.status"] == row["status"]
        assert run.data.tags["birdtune.best"] == str(trial_id == best).lower()
    assert seen == set(table.trial_id)

    # TensorBoard: each trial's folder holds event files with every epoch's cmAP
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for trial_id, epochs in zip(table.trial_id, table.epochs):
        folder = next(p for p in exp.iterdir() if p.is_dir() and trial_id in p.name)
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert len(acc.Scalars("ray/tune/cmap")) == epochs, (trial_id, acc.Tags()["scalars"][:10])

    # W&B (offline): one run per trial, read back from its .wandb file: project, group, config, every epoch
    runs = sorted((exp / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 4, sorted(p.name for p in exp.iterdir())
    seen = set()
    for path in runs:
        run = _wandb_run(path)
        assert run["project"] == "birds" and run["group"] == "t" and run["exited"], (path, path.stat().st_size, run)
        trial_id = json.loads(run["config"]["trial_id"])
        folder = next(p for p in exp.iterdir() if p.is_dir() and trial_id in p.name)
        logged = pd.read_json(folder / "result.json", lines=True)
        assert run["cmap"] == pytest.approx(logged["cmap"].tolist())
        assert json.loads(run["config"]["lr"]) == pytest.approx(logged["config"].iloc[0]["lr"])
        seen.add(trial_id)
    assert seen == set(table.trial_id)


def _wandb_records(path: Path):
    """The protobuf records of an offline W&B run file: a 7-byte header (':W&B', magic, version), then
    LevelDB's log format (32 KiB blocks; records of checksum, length, type, data; long ones in pieces)."""
    import struct

    data, pos, block, piece = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B", data[:7]
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # whole
            yield chunk
        elif kind in (2, 3):  # first, middle
            piece = chunk if kind == 2 else piece + chunk
        elif kind == 4:  # last
            yield piece + chunk


def _wandb_run(path: Path) -> dict:
    from wandb.proto import wandb_internal_pb2

    run = {"config": {}, "cmap": [], "exited": False, "project": None, "group": None, "records": []}
    for raw in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        run["records"].append(kind)  # what the file held, for a failure's message
        if kind == "run":
            run["project"], run["group"] = rec.run.project, rec.run.run_group
            run["config"].update({i.key: i.value_json for i in rec.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: i.value_json for i in rec.config.update})
        elif kind == "history":
            run["cmap"] += [json.loads(i.value_json) for i in rec.history.item
                            if (i.key or "/".join(i.nested_key)) == "cmap"]
        elif kind == "exit":
            run["exited"] = True
    return run
