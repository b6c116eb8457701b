"""`core.predict --export-kaggle`, run the way a Kaggle notebook with the internet off runs it: a fresh virtual
environment holding only the packages core.predict needs (and what they need; no Ray, Optuna, albumentations
or pytorch-toolbelt), the wheel installed with --no-deps --no-index, the README's two cells run as written
(paths moved from /kaggle to a temporary folder), a soundscape in the competition's layout."""
from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from packaging.requirements import Requirement

import birdsong
from core import kaggle
from test_predict import CLASSES, make_model_folder

FORBIDDEN = ("ray", "optuna", "albumentations", "pytorch_toolbelt")


def _closure(names) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `names` need, recursively (extras and other platforms left out)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.fixture(scope="module")
def kaggle_python(tmp_path_factory) -> Path:
    """A venv whose site-packages links only the runtime closure of core.predict's packages."""
    venv = tmp_path_factory.mktemp("kaggle") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    dists = _closure(kaggle.RUNTIME)
    assert not {re.sub(r"[-_.]+", "-", n) for n in FORBIDDEN} & set(dists), sorted(dists)
    for dist in dists.values():
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return venv / "bin" / "python"


def _cells(readme: str) -> list[str]:
    return [c.strip() for c in re.findall(r"```\n(.*?)```", readme, re.S)]


def test_the_exported_folder_predicts_in_a_kaggle_like_environment(kaggle_python, tmp_path):
    models = [make_model_folder(tmp_path / "m1", seed=0), make_model_folder(tmp_path / "m2", seed=1)]
    out = tmp_path / "export"
    r = subprocess.run([sys.executable, "-m", "core.predict", "--model", str(models[0]), "--model", str(models[1]),
                        "--export-kaggle", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(out.glob("birdtune-*-py3-none-any.whl"))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", wheel.name, "model-1", "model-2"]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "core/predict.py" in names and any(n.endswith(".dist-info/RECORD") for n in names)

    # the competition's layout, in a folder standing in for /kaggle
    root = tmp_path / "kaggle"
    (root / "input").mkdir(parents=True)
    (root / "input" / kaggle.DATASET).symlink_to(out)
    sounds = root / "input" / kaggle.COMPETITION / "test_soundscapes"
    sounds.mkdir(parents=True)
    seconds = birdsong.soundscape(sounds / "soundscape_1.ogg", ["owl", "crow", "lark"])
    (root / "working").mkdir()

    install, predict = (c.lstrip("!") for c in _cells((out / "README.md").read_text()))
    env = {"PATH": f"{kaggle_python.parent}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    for name in FORBIDDEN:  # none of the search's packages is there
        r = subprocess.run([str(kaggle_python), "-c", f"import {name}"], capture_output=True, text=True, env=env,
                           cwd=root, timeout=120)
        assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr, name

    def run(cell: str) -> subprocess.CompletedProcess:
        args = shlex.split(cell.replace("/kaggle", str(root)))  # a notebook's `!pip` / `!python`: the venv's
        assert args[0] in ("pip", "python"), cell
        args = [str(kaggle_python), *(["-m", "pip"] if args[0] == "pip" else []), *args[1:]]
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=root / "working", timeout=300)

    r = run(install)
    assert r.returncode == 0 and "Successfully installed birdtune" in r.stdout, r.stdout + r.stderr
    r = run(predict)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "an ensemble of 2 models" in r.stdout
    sub = pd.read_csv(root / "working" / "submission.csv")
    assert list(sub.columns) == ["row_id", *CLASSES]
    assert sub["row_id"].tolist() == [f"soundscape_1_{5 * (k + 1)}" for k in range(int(np.ceil(seconds / 5)))]
    probs = sub[CLASSES].to_numpy()
    assert np.isfinite(probs).all() and (probs >= 0).all() and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the same numbers as birdtune's own environment gives
    here = subprocess.run([sys.executable, "-m", "core.predict", "--model", str(models[0]), "--model", str(models[1]),
                           "--audio", str(sounds), "--out", str(tmp_path / "here.csv"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert here.returncode == 0, here.stderr
    assert np.abs(pd.read_csv(tmp_path / "here.csv")[CLASSES].to_numpy() - probs).max() < 1e-5


def test_one_model_goes_to_model_and_a_used_folder_is_refused(tmp_path, capsys):
    from core.predict import main

    model = make_model_folder(tmp_path / "m")
    assert main(["--model", str(model), "--export-kaggle", str(tmp_path / "k")]) == 0
    assert sorted(p.name for p in (tmp_path / "k" / "model").iterdir()) == \
        ["classes.txt", "config.yaml", "model.pt", "spectrogram.yaml"]
    assert f"--model /kaggle/input/{kaggle.DATASET}/model --audio" in (tmp_path / "k" / "README.md").read_text()
    capsys.readouterr()
    assert main(["--model", str(model), "--export-kaggle", str(tmp_path / "k")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --export-kaggle {tmp_path / 'k'} is not empty; give a new folder"
