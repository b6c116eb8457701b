"""From BirdCLEF-shaped audio to a submission, as a user runs it: prepare -> search -> predict."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

import birdsong
from helpers import run_module

pytestmark = pytest.mark.slow
def module(name, *args, timeout=600):
    return run_module(name, *args, timeout=timeout)


def test_prepare_search_predict(tmp_path):
    meta = birdsong.make_birdclef(tmp_path)
    # one recording per species is held out of training: the soundscape is made of those
    held = meta.groupby("primary_label").tail(1)
    meta.drop(index=held.index).drop(columns=["seconds"]).to_csv(tmp_path / "train_metadata.csv", index=False)
    parts = [sf.read(tmp_path / "train_audio" / f, dtype="float32", always_2d=True) for f in held["filename"]]
    import soxr

    y = np.concatenate([soxr.resample(x.mean(1), sr, 32000) for x, sr in parts])
    (tmp_path / "test_soundscapes").mkdir()
    birdsong.write(tmp_path / "test_soundscapes" / "soundscape_1.ogg", y.astype(np.float32), 32000)

    r = module("core.prepare", "--audio", str(tmp_path / "train_audio"), "--metadata",
               str(tmp_path / "train_metadata.csv"), "--out", str(tmp_path / "Data"), "--workers", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    table = pd.read_csv(tmp_path / "Data" / "train.csv")
    trained = meta.drop(index=held.index)
    assert len(table) == sum(birdsong.expected_windows(s) for s in trained["seconds"])

    r = module("search.run", "--space", "smoke", "--csv", str(tmp_path / "Data" / "train.csv"), "--no-dashboard",
               "--storage-path", str(tmp_path / "results"), "--name", "bc", "--num-samples", "3",
               "--set", "model_name=test_efficientnet", "--set", "pretrained=false")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    best = tmp_path / "results" / "bc" / "best"
    classes = sorted(meta["primary_label"].unique())
    assert (best / "classes.txt").read_text().split() == classes
    settings = yaml.safe_load((tmp_path / "Data" / "prepare.yaml").read_text())
    assert yaml.safe_load((best / "spectrogram.yaml").read_text()) == settings["spectrogram"]

    # the model folder moves: predict needs neither the CSV nor the images
    moved = tmp_path / "kaggle" / "model"
    moved.parent.mkdir()
    best.rename(moved)
    (tmp_path / "Data" / "train.csv").unlink()
    r = module("core.predict", "--model", str(moved), "--audio", str(tmp_path / "test_soundscapes"),
               "--out", str(tmp_path / "submission.csv"), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    sub = pd.read_csv(tmp_path / "submission.csv")
    windows = int(np.ceil(len(y) / 32000 / 5))
    assert list(sub.columns) == ["row_id", *classes]
    assert sub["row_id"].tolist() == [f"soundscape_1_{5 * (k + 1)}" for k in range(windows)]
    assert np.allclose(sub[classes].sum(axis=1), 1, atol=1e-5)
