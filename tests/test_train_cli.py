"""`python -m core.train`: demo defaults, overrides, files written, one-line errors with exit code 2."""

import pandas as pd

from core.config import TrainConfig
from core.train import resolve_config
from helpers import run_module


def run(*args, cwd=None):
    return run_module("core.train", *args, cwd=cwd)


def test_empty_csv_means_demo_data_and_a_cpu_model_but_user_values_win(tiny_root, tmp_path):
    cfg = resolve_config(None, ["epochs=2", "batch_size=8"], demo_size="tiny", verbose=False)
    assert cfg.csv == str(tiny_root / "train.csv") and cfg.model_name == "test_efficientnet"
    assert (cfg.pretrained, cfg.img_size, cfg.epochs, cfg.batch_size) == (False, 32, 2, 8)
    (tmp_path / "c.yaml").write_text("model_name: test_resnet\nlr: 1e-3\n")
    cfg = resolve_config(str(tmp_path / "c.yaml"), [], demo_size="tiny", verbose=False)
    assert cfg.model_name == "test_resnet" and cfg.lr == 1e-3 and cfg.csv.endswith("train.csv")


def test_one_run_writes_config_metrics_and_checkpoints(tiny_root, tmp_path):
    out = tmp_path / "run"
    r = run("--set", f"csv={tiny_root / 'train.csv'}", "--set", "model_name=test_efficientnet",
            "--set", "pretrained=false", "--set", "img_size=32", "--set", "epochs=2", "--set", f"out_dir={out}",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert "epoch   2" in r.stdout and "done: status ok" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "classes.txt", "config.yaml", "last.pt", "metrics.csv"]
    names = pd.read_csv(tiny_root / "train.csv").drop_duplicates("label").sort_values("label")["label_name"]
    assert (out / "classes.txt").read_text().split() == names.tolist()  # what core.predict needs besides the weights
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    assert TrainConfig.load(out / "config.yaml").epochs == 2
    # the saved config reruns as it is
    r2 = run("--config", str(out / "config.yaml"), "--set", "epochs=1", "--set", f"out_dir={tmp_path / 'again'}",
             "--quiet")
    assert r2.returncode == 0, r2.stderr


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    cases = [(["--set", "lrr=1"], "unknown config key 'lrr'"),
             (["--set", "lr=-1", "--set", "csv=x.csv"], "lr must be > 0"),
             (["--set", f"csv={tmp_path / 'none.csv'}"], "CSV not found"),
             (["--config", str(tmp_path / "none.yaml")], "config file not found")]
    for args, message in cases:
        r = run(*args, "--quiet", cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
