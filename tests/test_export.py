"""search.export on a finished search (the session's shared one): best/ with the chosen config and its
weights, which retrain and reproduce the trial; best-1 ... best-K for an ensemble; a bad --top refused."""
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import spaces
from core import checkpoint
from core.config import TrainConfig
from helpers import ENV, read_table

pytestmark = pytest.mark.slow


def header_of(config, lines: int) -> dict:
    """The first `lines` comment lines of an exported config.yaml, read as the YAML they are (a trial id of
    digits only is written quoted, so that it stays a string)."""
    head = Path(config).read_text().splitlines()[:lines]
    assert all(ln.startswith("# ") for ln in head), head
    return yaml.safe_load("\n".join(ln[2:] for ln in head))


def test_best_config_and_model_are_exported_and_retrain(finished, tmp_path):
    exp, _ = finished
    table = pd.read_parquet(exp / "trials.parquet")
    runs = read_table(exp / "revalidation.csv")
    chosen = runs.groupby("trial_id")["best_cmap"].mean().idxmax()
    best = table[table.trial_id == chosen].iloc[0]
    cfg = TrainConfig.load(exp / "best" / "config.yaml")
    assert cfg.lr == pytest.approx(best["lr"]) and cfg.drop_rate == pytest.approx(best["drop_rate"])
    assert cfg.epochs == spaces.get("smoke").epochs and cfg.model_name == "test_efficientnet"
    demo = pd.read_csv(cfg.csv).drop_duplicates("label").sort_values("label")
    assert (exp / "best" / "classes.txt").read_text().split() == demo["label_name"].tolist()
    assert not (exp / "best" / "spectrogram.yaml").exists()  # the demo's images were not made from audio
    assert header_of(exp / "best" / "config.yaml", 2) == {"trial_index": best["trial_index"], "trial_id": best["trial_id"]}
    model = checkpoint.load(exp / "best" / "model.pt")  # from the chosen config's first re-validation fold
    first = runs[runs.trial_id == chosen].sort_values("fold").iloc[0]
    assert model["metrics"]["cmap"] == pytest.approx(first["best_cmap"]) and model["config"]["fold"] == first["fold"]
    r = subprocess.run([sys.executable, "-m", "core.train", "--config", str(exp / "best" / "config.yaml"),
                        "--set", "epochs=1", "--set", f"out_dir={tmp_path}", "--quiet"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    retrained = pd.read_csv(tmp_path / "metrics.csv")
    assert len(retrained) == 1
    # the same config, data and seed reproduce the trial (up to thread-count float noise)
    trial_dir = next(p for p in exp.iterdir() if p.is_dir() and best["trial_id"] in p.name)
    trial_epoch1 = pd.read_json(trial_dir / "result.json", lines=True).iloc[0]
    assert retrained["cmap"].iloc[0] == pytest.approx(trial_epoch1["cmap"], abs=0.02)
    # Ray's own reader understands the folder
    from ray.tune import ExperimentAnalysis

    assert len(ExperimentAnalysis(str(exp)).trials) == len(table)


def test_export_top_k_writes_the_best_trials_model_folders_for_an_ensemble(finished, tmp_path):
    exp, _ = finished
    copy = tmp_path / "e2e"
    shutil.copytree(exp, copy)  # the shared experiment stays as the other tests read it
    r = subprocess.run([sys.executable, "-m", "search.export", str(copy), "--top", "3"], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = pd.read_parquet(copy / "trials.parquet")
    ranked = table[table.status.isin(["completed", "stopped_early"])].sort_values("best_cmap", ascending=False,
                                                                                  kind="stable")
    for i, (_, row) in enumerate(ranked.head(3).iterrows(), 1):
        folder = copy / f"best-{i}"
        cfg = TrainConfig.load(folder / "config.yaml")
        assert cfg.lr == pytest.approx(row["lr"]) and cfg.drop_rate == pytest.approx(row["drop_rate"])
        assert header_of(folder / "config.yaml", 2) == {"trial_index": row["trial_index"], "trial_id": row["trial_id"]}
        model = checkpoint.load(folder / "model.pt")  # that trial's best-epoch weights
        assert model["metrics"]["cmap"] == pytest.approx(row["best_cmap"]) and model["epoch"] == row["best_epoch"]
        assert (folder / "classes.txt").read_text() == (copy / "best" / "classes.txt").read_text()
    assert not (copy / "best-4").exists()
    assert f"--model {copy}/best-1 --model {copy}/best-2 --model {copy}/best-3 --audio" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "search.export", str(copy), "--top", "-1"], capture_output=True,
                         text=True, env=ENV, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --top must be >= 1 (or 0: best/ only)"
