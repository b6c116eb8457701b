"""`python -m core.predict` and the model folder it reads: rows, columns, probabilities, ONNX, bad input."""

import numpy as np
import pandas as pd
import pytest
import torch

import birdsong
from core import audio, bundle, checkpoint
from core.config import TrainConfig
from core.model import build_model
from core.predict import Predictor, window_ids
from core.predict import main as predict_main
from helpers import run_module

CLASSES = ["blackbird", "crow", "duck", "lark", "owl"]


def run(*args, timeout=300):
    return run_module("core.predict", *args, timeout=timeout)


def make_model_folder(folder, img_size=128, spectrogram=None, classes=CLASSES, seed=0):
    """A model folder as search.export writes it, with random test_efficientnet weights."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model("test_efficientnet", len(classes))
    TrainConfig(model_name="test_efficientnet", pretrained=False, img_size=img_size).save(folder / "config.yaml")
    checkpoint.save(folder / "model.pt", {"model": model.state_dict(), "num_classes": len(classes)})
    bundle.write_extras(folder, classes, spectrogram or audio.Spectrogram().to_dict())
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("best") / "best")


@pytest.fixture(scope="module")
def soundscapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("soundscapes")
    lengths = {"sc_a": birdsong.soundscape(d / "sc_a.ogg", ["hen", "owl", "crow", "lark"]),
               "sc_b": birdsong.soundscape(d / "sc_b.ogg", ["duck", "tucan", "seagull", "penguin", "rooster"])}
    return d, lengths


def test_every_window_gets_a_row_in_the_submission_format(model_dir, soundscapes, tmp_path):
    d, lengths = soundscapes
    r = run("--model", str(model_dir), "--audio", str(d), "--out", str(tmp_path / "submission.csv"), "--quiet")
    assert r.returncode == 0, r.stderr
    sub = pd.read_csv(tmp_path / "submission.csv")
    assert list(sub.columns) == ["row_id", *CLASSES]
    expect = [f"{stem}_{5 * (k + 1)}" for stem in sorted(lengths) for k in range(int(np.ceil(lengths[stem] / 5)))]
    assert sub["row_id"].tolist() == expect
    probs = sub[CLASSES].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-5) and (probs >= 0).all()
    assert f"predicted {len(expect)} windows of 2 file(s)" in r.stdout


def test_probabilities_are_the_models_softmax_on_the_training_images(model_dir, soundscapes):
    """The traced CPU model gives what the eager model gives on the images prepare would write."""
    d, _ = soundscapes
    b = bundle.load(model_dir)
    samples = audio.decode(d / "sc_a.ogg", 32000, strict=False)
    imgs = audio.images(audio.windows(samples, b.spectrogram.window_samples)[0], b.spectrogram)
    got = Predictor(b, "cpu", "torch")(imgs)
    model = build_model("test_efficientnet", len(CLASSES)).eval()
    model.load_state_dict(b.weights)
    with torch.inference_mode():
        want = model(torch.from_numpy(imgs[:, None])).softmax(-1).numpy()
    assert got.shape == (len(imgs), len(CLASSES)) and np.abs(got - want).max() < 1e-5


def test_onnx_export_and_runtime_match_pytorch_within_1e_4(model_dir, soundscapes, tmp_path):
    pytest.importorskip("onnxruntime")
    d, _ = soundscapes
    r = run("--model", str(model_dir), "--export-onnx")
    assert r.returncode == 0 and (model_dir / "model.onnx").is_file(), r.stderr
    outs = {}
    for backend in ("torch", "onnx"):
        r = run("--model", str(model_dir), "--audio", str(d), "--out", str(tmp_path / f"{backend}.csv"),
                "--backend", backend, "--quiet")
        assert r.returncode == 0 and f"with {backend}" in r.stdout, r.stderr
        outs[backend] = pd.read_csv(tmp_path / f"{backend}.csv")
    assert outs["torch"]["row_id"].tolist() == outs["onnx"]["row_id"].tolist()
    assert np.abs(outs["torch"][CLASSES].to_numpy() - outs["onnx"][CLASSES].to_numpy()).max() < 1e-4


def test_a_model_trained_on_smaller_images_gets_them_resized_as_in_training(tmp_path, soundscapes):
    d, lengths = soundscapes
    folder = make_model_folder(tmp_path / "small", img_size=64)
    r = run("--model", str(folder), "--audio", str(d / "sc_b.ogg"), "--out", str(tmp_path / "s.csv"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "s.csv")) == int(np.ceil(lengths["sc_b"] / 5))


def test_row_ids_end_at_each_windows_end_second():
    assert window_ids("sc", 3, 5.0) == ["sc_5", "sc_10", "sc_15"]
    assert window_ids("x", 2, 2.5) == ["x_3", "x_5"]


def test_a_file_it_cannot_decode_is_listed_and_the_others_go_on(model_dir, soundscapes, tmp_path):
    d, lengths = soundscapes
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.ogg").write_bytes((d / "sc_a.ogg").read_bytes())
    (mixed / "bad.ogg").write_bytes(b"this is no audio" * 20)
    r = run("--model", str(model_dir), "--audio", str(mixed), "--out", str(tmp_path / "s.csv"), "--quiet")
    assert r.returncode == 1
    assert f"skipped {mixed / 'bad.ogg'}: cannot decode" in r.stderr and "1 file(s) skipped" in r.stdout
    sub = pd.read_csv(tmp_path / "s.csv")
    assert len(sub) == int(np.ceil(lengths["sc_a"] / 5)) and sub["row_id"].str.startswith("good_").all()


@pytest.mark.parametrize("missing", ["config.yaml", "model.pt", "classes.txt", "spectrogram.yaml"])
def test_a_model_folder_missing_a_file_is_refused_naming_it(model_dir, tmp_path, missing, soundscapes, capsys):
    folder = tmp_path / "best"
    folder.mkdir()
    for f in ("config.yaml", "model.pt", "classes.txt", "spectrogram.yaml"):
        if f != missing:
            (folder / f).write_bytes((model_dir / f).read_bytes())
    code = predict_main(["--model", str(folder), "--audio", str(soundscapes[0]), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "s.csv").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: model folder {folder} lacks {missing}"), err


def test_other_bad_input_is_one_line(model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "dup" / "a").mkdir(parents=True)
    (tmp_path / "dup" / "b").mkdir()
    for sub in ("a", "b"):
        (tmp_path / "dup" / sub / "x.ogg").write_bytes(b"")
    (tmp_path / "classes").mkdir()
    for f in ("config.yaml", "model.pt", "spectrogram.yaml"):
        (tmp_path / "classes" / f).write_bytes((model_dir / f).read_bytes())
    (tmp_path / "classes" / "classes.txt").write_text("a\nb\n")
    cases = [(["--model", str(tmp_path / "nowhere")], "model folder not found"),
             (["--audio", str(tmp_path / "empty")], "no audio files"),
             (["--audio", str(tmp_path / "missing")], "not found"),
             (["--audio", str(tmp_path / "dup")], "would give the same row ids"),
             (["--model", str(tmp_path / "classes")], "names 2 classes but model.pt has 5 outputs"),
             (["--backend", "tflite"], "--backend must be one of torch, onnx")]
    for args, message in cases:
        base = {"--model": str(model_dir), "--audio": str(tmp_path / "empty"), "--out": str(tmp_path / "s.csv")}
        for flag, value in zip(args[::2], args[1::2]):
            base[flag] = value
        code = predict_main([x for kv in base.items() for x in kv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, err)


def test_an_ensemble_averages_its_models_probabilities(model_dir, soundscapes, tmp_path):
    d, _ = soundscapes
    other = make_model_folder(tmp_path / "other", seed=1)
    outs = {}
    for name, models in {"a": [model_dir], "b": [other], "ab": [model_dir, other]}.items():
        args = [x for m in models for x in ("--model", str(m))]
        r = run(*args, "--audio", str(d), "--out", str(tmp_path / f"{name}.csv"), "--quiet")
        assert r.returncode == 0, r.stderr
        outs[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert "an ensemble of 2 models (test_efficientnet)" in r.stdout
    assert list(outs["ab"].columns) == ["row_id", *CLASSES] and outs["ab"]["row_id"].equals(outs["a"]["row_id"])
    a, b, ab = (outs[k][CLASSES].to_numpy() for k in ("a", "b", "ab"))
    assert np.abs(a - b).max() > 1e-3  # two different models
    assert np.abs(ab - (a + b) / 2).max() < 2e-6 and np.allclose(ab.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("change,message", [
    (dict(classes=CLASSES[::-1]), "has other classes than --model"),
    (dict(classes=CLASSES[:4]), "has other classes than --model"),
    (dict(spectrogram={**audio.Spectrogram().to_dict(), "n_mels": 64}), "other spectrograms than --model"),
    (dict(img_size=64), "img_size 128 vs 64"),
])
def test_an_ensemble_of_models_that_do_not_fit_together_is_refused_in_one_line(model_dir, soundscapes, tmp_path,
                                                                                 change, message, capsys):
    d, _ = soundscapes
    other = make_model_folder(tmp_path / "other", **change)
    code = predict_main(["--model", str(model_dir), "--model", str(other), "--audio", str(d),
                         "--out", str(tmp_path / "s.csv"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.timeout(120)
def test_a_failure_that_is_not_a_files_fault_ends_predict_instead_of_hanging_it(model_dir, soundscapes, monkeypatch):
    from core import predict

    def broken(*a, **k):
        raise ImportError("No module named 'scipy'")  # as in an environment that lacks a package

    monkeypatch.setattr(predict, "load_item", broken)
    d, _ = soundscapes
    with pytest.raises(ImportError, match="scipy"):
        predict.predict(sorted(d.glob("*.ogg")), Predictor(bundle.load(model_dir), "cpu", "torch"))
