"""search.plan: every bad input of `python -m search.run` is refused before Ray starts (one line, exit code 2,
nothing written; one table, each case through search.run.main in this process, one through the real CLI);
a good command line becomes the plan it says; the resources a trial gets by default."""
import subprocess
import sys

import pandas as pd
import pytest

import helpers
from search import run as search_run
from search.spec import SearchSpec


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


def _experiment(store):
    """An experiment 'old' of the smoke space, as far as --resume reads it before any work."""
    from core import demo

    spec = SearchSpec(space="smoke", max_t=3, grace_period=1, reduction_factor=2, num_samples=6,
                      searched=["lr", "drop_rate"], points=[], seed=0, cpus_per_trial=1, gpus_per_trial=0.0,
                      searcher="tpe", scheduler="asha", revalidate_top=0, revalidate_folds=[], study=None,
                      base={**demo.demo_overrides("tiny"), "batch_size": 16, "epochs": 3})
    (store / "old").mkdir()
    (store / "old" / "search.yaml").write_text(spec.to_yaml())


BAD_INPUTS = [
    # (name, csv builder or None for the demo, extra args, message)
    ("missing CSV", None, ["--csv", "nowhere/train.csv"], "CSV not found: nowhere/train.csv"),
    ("CSV is a folder", None, ["--csv", "{tmp}"], "CSV not found"),
    ("missing columns", lambda t: _csv(t, rows=[{"path": "img/x0.png", "y": 0}]), [], "lacks column(s) image_path, label, fold"),
    ("non-integer labels", lambda t: _csv(t, rows=_rows(label=[0, "b", 0, 1, 0, 1])), [], "column 'label' must hold integers"),
    ("negative labels", lambda t: _csv(t, rows=_rows(label=[0, -1, 0, 1, 0, 1])), [], "negative labels"),
    ("labels above num_classes", lambda t: _csv(t, rows=_rows(label=[0, 5, 0, 1, 0, 1])), ["--set", "num_classes=3"],
     "label(s) outside 0..2"),
    ("missing images", lambda t: _csv(t, images=False), [], "6 image(s) not found"),
    ("corrupt image", lambda t: _csv(t, corrupt=True), [], "1 image(s) could not be decoded"),
    ("fold with no rows", lambda t: _csv(t), ["--set", "fold=4"], "fold 4 has no rows to validate on"),
    ("unknown space", None, ["--space", "nope"], "unknown space 'nope'; valid spaces: finetune, scratch, smoke"),
    ("unknown --set key", None, ["--set", "learning_rate=1"], "unknown config key 'learning_rate'"),
    ("wrong value type", None, ["--set", "batch_size=big"], "batch_size must be int"),
    ("wrong value type (epochs)", None, ["--set", "epochs=many"], "epochs must be int"),
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
    ("unreachable address", None, ["--address", "127.0.0.1:{port}"], "cannot reach a Ray cluster at 127.0.0.1:"),
    ("cuda without GPUs", None, ["--set", "device=cuda"], "--set device=cuda needs GPUs for the trials"),
    ("malformed address", None, ["--address", "nowhere"], "--address must be auto or host:port"),
    ("Ray Client address", None, ["--address", "ray://127.0.0.1:10001"],
     "--address ray://127.0.0.1:10001: Ray Client is not supported"),
    ("unwritable storage", None, ["--storage-path", "{file}/sub"], "/sub cannot be used: "),
    ("checkpoint not ours", lambda t: _csv(t), ["--set", "init_checkpoint={pickle}"], "holds pickled Python objects"),
    ("missing checkpoint", lambda t: _csv(t), ["--set", "init_checkpoint={tmp}/none.pt"], "checkpoint not found"),
    ("zero trials", None, ["--num-samples", "0"], "--num-samples must be >= 1"),
    ("time budget that is not a duration", None, ["--time-budget", "soon"],
     "--time-budget soon: give a duration above 0 such as 2h, 90m, 45s or 3600 (seconds)"),
    ("zero time budget", None, ["--time-budget", "0m"], "--time-budget 0m: give a duration above 0"),
    ("zero epoch budget", None, ["--epoch-budget", "0"], "--epoch-budget must be >= 1"),
    ("epoch budget below the first rung", None, ["--epoch-budget", "1", "--grace-period", "2"],
     "--epoch-budget 1 is less than one trial's first 2 epoch(s) before ASHA may judge it"),
    ("zero grace period", None, ["--grace-period", "0"], "--grace-period must be >= 1"),
    ("grace period past the epochs", None, ["--grace-period", "5", "--epochs", "3"],
     "--grace-period 5 is longer than the 3 epochs of a trial"),
    ("grace period past the space's epochs", None, ["--grace-period", "9"],
     "--grace-period 9 is longer than the 3 epochs of a trial (the 'smoke' space's; --epochs sets them)"),
    ("resume without a name", None, ["--resume"], "--resume needs --name"),
    ("resume of nothing", None, ["--resume", "--name", "ghost"], "no birdtune experiment 'ghost'"),
    ("resume with another trial count", None, ["--resume", "--name", "old", "--num-samples", "9"],
     "--num-samples 9 conflicts with experiment 'old' (6): --resume continues the search its search.yaml describes"),
    ("resume with another base value", None, ["--resume", "--name", "old", "--set", "batch_size=8"],
     "--set batch_size=8 conflicts with experiment 'old' (16)"),
    ("resume with another space", None, ["--resume", "--name", "old", "--space", "finetune"],
     "--space finetune conflicts with experiment 'old' (smoke)"),
    ("resume with another budget", None, ["--resume", "--name", "old", "--epoch-budget", "50"],
     "--epoch-budget 50 conflicts with experiment 'old'"),
    ("resume with a concurrency", None, ["--resume", "--name", "old", "--concurrency", "1"],
     "--concurrency cannot change on --resume"),
    ("re-validation folds the data lacks", None, ["--revalidate-top", "2", "--folds", "1,9"],
     "--folds 1,9: the data's folds are [0, 1, 2, 3, 4]"),
    ("folds without re-validation", None, ["--folds", "1"], "--folds only applies with --revalidate-top K"),
    ("tail fill without ASHA", None, ["--tail-fill", "on", "--scheduler", "none"],
     "--tail-fill on continues trials ASHA stopped in a search of --num-samples trials; --scheduler none stops no trial"),
    ("tail fill with a budget", None, ["--tail-fill", "on", "--epoch-budget", "20"],
     "--tail-fill on continues trials ASHA stopped in a search of --num-samples trials; a compute budget ends"),
    ("resume with another tail fill", None, ["--resume", "--name", "old", "--tail-fill", "off"],
     "--tail-fill off conflicts with experiment 'old' (auto)"),
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
    args = [a.format(tmp=tmp_path, file=tmp_path / "file", pickle=tmp_path / "whole.pth", port=helpers.free_port())
            for a in args]
    if name == "open dashboard without auth":
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    if name == "pretrained weights out of reach":  # an empty cache and no hub, as on an offline machine
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name == "GPUs on a CPU machine" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    store = tmp_path / "results"
    store.mkdir()
    if name.startswith("resume with"):
        _experiment(store)
    argv = ["--storage-path", str(store)] if "--storage-path" not in args else []
    if "--space" not in args:
        argv += ["--space", "smoke"]
    if make_csv is not None:
        argv += ["--csv", str(make_csv(tmp_path))]
        if name != "pretrained weights out of reach":  # user data: the default model would need the hub
            argv += ["--set", "pretrained=false"]
    if "--dashboard-host" not in args:
        argv += ["--no-dashboard"]
    before = {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    code = search_run.main(argv + args)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and "Ray dashboard" not in out
    # nothing written anywhere under this test's folder: the storage path given (even an unwritable one)
    # and everything around it are as they were
    assert {p: p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")} == before
    if "ray" in sys.modules:
        import ray

        assert not ray.is_initialized()


def test_the_cli_exits_2_with_one_line_and_starts_no_ray(tmp_path):
    r = helpers.search("--storage-path", tmp_path / "store", "--space", "nope", timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: unknown space 'nope'; valid spaces: finetune, scratch, smoke"]
    assert "Ray" not in r.stdout and not (tmp_path / "store").exists()


def test_the_cli_imports_ray_only_when_it_starts_it():
    """Joining a token-protected cluster needs RAY_AUTH_MODE set before `import ray` (search.cluster.start);
    bad input is refused without loading torch or Ray."""
    code = "import sys, search.run; print(sorted(m for m in ('ray', 'torch', 'timm', 'optuna') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_cpus_per_trial_defaults_to_the_cpus_of_a_gpu_slot():
    from search.plan import default_cpus

    assert default_cpus(0.25, 16, 1) == 4  # four trials share the GPU: four CPUs each
    assert default_cpus(0.5, 16, 2) == 4 and default_cpus(1, 16, 8) == 2 and default_cpus(2, 16, 8) == 4
    assert default_cpus(0.0, 16, 1) == 1 and default_cpus(0.25, 16, 0) == 1 and default_cpus(0.1, 4, 1) == 1


def test_a_good_command_line_becomes_the_plan_it_says_and_writes_nothing(tmp_path, capsys):
    import spaces
    from search import cli, plan

    store = tmp_path / "results"
    p = plan.make(cli.parse_args(["--space", "smoke", "--no-dashboard", "--storage-path", str(store), "--name", "p",
                                  "--epoch-budget", "6", "--set", "batch_size=8", "--seed", "3"]))
    smoke = spaces.get("smoke")
    spec = p.spec
    assert (spec.space, spec.max_t, spec.grace_period, spec.reduction_factor) == ("smoke", smoke.epochs, 1, 2)
    assert spec.num_samples is None and spec.epoch_budget == 6 and spec.time_budget is None  # a budget: open-ended
    assert spec.base["batch_size"] == 8 and spec.base["seed"] == 3 and spec.base["device"] == "cpu"
    assert spec.searched == smoke.searched() and spec.classes and spec.searcher == "mftpe"
    assert p.options.exp == str(store / "p") and p.options.journal == str(store / "p" / "results_log.jsonl")
    assert spec.study == str(store / "p" / "optuna.db") and spec.journal is None  # in the experiment
    assert len(p.data.table) > 0 and "images (" in capsys.readouterr().out  # the data's start-up line
    assert list(store.iterdir()) == []  # (the write probe's folder: the storage path itself)
