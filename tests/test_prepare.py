"""`python -m core.prepare` on a BirdCLEF-shaped folder of real bird calls: the dataset, folds, resuming,
bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

import birdsong
from core import prepare
from core.data import read_table
from helpers import ENV, run_module

def run(*args, cwd=None, timeout=300):
    return run_module("core.prepare", *args, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def birdclef(tmp_path_factory):
    """The folder plus the bad files the issue lists, and the prepared dataset."""
    root = tmp_path_factory.mktemp("birdclef")
    calls = birdsong.tuxpaint_calls()
    bad = [dict(primary_label="owl", filename="owl/XC1.ogg"),  # missing
           dict(primary_label="owl", filename="owl/XC2.ogg"),  # empty
           dict(primary_label="owl", filename="owl/XC3.ogg"),  # truncated
           dict(primary_label="owl", filename="owl/XC4.ogg"),  # not audio
           dict(primary_label="owl", filename="owl/XC5.ogg")]  # silent
    meta = birdsong.make_birdclef(root, extra_rows=bad)
    owl = root / "train_audio" / "owl"
    owl.mkdir()
    (owl / "XC2.ogg").write_bytes(b"")
    data = calls["owl"].read_bytes()
    (owl / "XC3.ogg").write_bytes(data[: len(data) // 2])
    (owl / "XC4.ogg").write_bytes(b"<html>not found</html>" * 50)
    (owl / "XC5.ogg").write_bytes(calls[birdsong.SILENT].read_bytes())
    r = run("--audio", str(root / "train_audio"), "--metadata", str(root / "train_metadata.csv"),
            "--out", str(root / "Data"), "--workers", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    return root, meta, r


def test_the_notebook_dataset_is_written(birdclef):
    root, meta, r = birdclef
    data = root / "Data"
    table = pd.read_csv(data / "train.csv")
    assert list(table.columns) == ["image_path", "label", "label_name", "group", "fold"]
    good = meta[meta["seconds"].notna()]
    # window counts by the rules, per recording
    counts = table.groupby("group").size()
    for _, rec in good.iterrows():
        assert counts[Path(rec.filename).stem] == birdsong.expected_windows(rec.seconds), rec.filename
    assert len(table) == sum(birdsong.expected_windows(s) for s in good["seconds"])
    # labels: the index of primary_label in sorted order; the failed species 'owl' keeps its column
    classes = sorted(meta["primary_label"].unique())
    assert classes == ["blackbird", "crow", "duck", "lark", "owl", "seagull", "tucan"]
    assert (table["label"] == table["label_name"].map(classes.index)).all()
    settings = yaml.safe_load((data / "prepare.yaml").read_text())
    assert settings["classes"] == classes and settings["image"] == [128, 313] and settings["folds"] == 5
    assert settings["spectrogram"]["n_fft"] == 2048 and settings["spectrogram"]["fmax"] == 16000
    # every image: the CSV's relative path, 128 x 313 grayscale, the recording's name and window number
    for row in table.itertuples():
        assert row.image_path == f"train_img/{row.label_name}/{row.group}_{row.image_path.rsplit('_', 1)[1]}"
        img = cv2.imread(str(data / row.image_path), cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 313) and img.dtype == np.uint8 and img.max() == 255
    # folds: 5, and no recording straddles two of them
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (table.groupby("group")["fold"].nunique() == 1).all()
    # the search's reader takes it as it is, with every class (owl has no images but keeps its column)
    df, n = read_table(data / "train.csv")
    assert n == len(classes) and len(df) == len(table)


def test_bad_files_are_skipped_listed_with_reasons_and_counted(birdclef):
    root, meta, r = birdclef
    errors = pd.read_csv(root / "Data" / "prepare_errors.csv")
    reasons = dict(zip(errors["filename"], errors["reason"]))
    assert list(reasons) == [f"owl/XC{i}.ogg" for i in range(1, 6)]
    for name, reason in [("XC1", "file not found"), ("XC2", "empty file"), ("XC3", "truncated"),
                         ("XC4", "cannot decode"), ("XC5", "silent")]:
        assert reason in reasons[f"owl/{name}.ogg"], (name, reasons)
    good = meta[meta["seconds"].notna()]
    windows = sum(birdsong.expected_windows(s) for s in good["seconds"])
    dropped = sum(s - 5 * birdsong.expected_windows(s) for s in good["seconds"] if s % 5 < 2.5 and s > 5)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("prepared"))
    assert f"prepared {len(good)} of {len(meta)} recordings -> {windows} windows (128x313 PNGs" in line
    assert f"in 6 of 7 classes; dropped {dropped:.1f} s" in line and "5 skipped" in line
    assert "0 species with fewer recordings than 5 folds, 1 with none" in line


def test_a_rerun_skips_finished_recordings_and_changes_nothing(birdclef, tmp_path):
    root, meta, _ = birdclef
    before = {p: p.read_bytes() for p in (root / "Data").rglob("*") if p.is_file()}
    r = run("--audio", str(root / "train_audio"), "--metadata", str(root / "train_metadata.csv"),
            "--out", str(root / "Data"))
    assert r.returncode == 0, r.stderr
    assert f"{len(meta) - 5} already prepared" in r.stdout and "5 to go" in r.stdout  # only the bad ones retried
    after = {p: p.read_bytes() for p in (root / "Data").rglob("*") if p.is_file()}
    assert after == before


def test_killed_midway_then_rerun_gives_byte_identical_output(tmp_path):
    """Many small recordings, one worker, SIGKILL once some are done: the rerun finishes the rest and the
    folder equals an uninterrupted run's, byte for byte."""
    import soundfile as sf

    audio_dir = tmp_path / "train_audio"
    rows = []
    for i in range(240):
        label = birdsong.SPECIES[i % 6]
        (audio_dir / label).mkdir(parents=True, exist_ok=True)
        y = np.tile(birdsong.clip(label), 4)[: 32000 * (8 + i % 9)]
        sf.write(audio_dir / label / f"XC{i}.wav", y, 32000, subtype="PCM_16")
        rows.append(dict(primary_label=label, filename=f"{label}/XC{i}.wav"))
    pd.DataFrame(rows).to_csv(tmp_path / "meta.csv", index=False)
    args = ["--audio", str(audio_dir), "--metadata", str(tmp_path / "meta.csv"), "--workers", "1", "--quiet"]
    ref = run(*args, "--out", str(tmp_path / "whole"))
    assert ref.returncode == 0, ref.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "core.prepare", *args, "--out", str(cut)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((cut / ".prepare").rglob("*.json"))) < 20:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((cut / ".prepare").rglob("*.json")))
    assert 20 <= done < 240 and not (cut / "train.csv").exists(), done  # really killed midway
    r = run(*args, "--out", str(cut))
    assert r.returncode == 0 and f"{done} already prepared" in r.stdout, r.stdout + r.stderr
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    whole, resumed = files(tmp_path / "whole"), files(cut)
    assert sorted(whole) == sorted(resumed) and whole == resumed
    assert len([p for p in whole if p.suffix == ".png"]) == len(pd.read_csv(cut / "train.csv"))


def test_a_species_with_fewer_recordings_than_folds_is_placed_and_counted(tmp_path):
    meta = birdsong.make_birdclef(tmp_path, species=("crow", "duck", "lark"),
                                  recordings=birdsong.RECORDINGS[:5] + [(6.0, 32000, 1, "WAV")])
    keep = meta[(meta.primary_label != "lark") | meta.filename.str.endswith(("100012.ogg", "100013.ogg"))]
    keep.drop(columns=["seconds"]).to_csv(tmp_path / "few.csv", index=False)
    outs = []
    for out in ("a", "b"):
        r = run("--audio", str(tmp_path / "train_audio"), "--metadata", str(tmp_path / "few.csv"),
                "--out", str(tmp_path / out), "--seed", "7")
        assert r.returncode == 0, r.stderr
        assert "1 species with fewer recordings than 5 folds" in r.stdout
        outs.append(pd.read_csv(tmp_path / out / "train.csv"))
    pd.testing.assert_frame_equal(outs[0], outs[1])  # deterministic placement
    lark = outs[0][outs[0].label_name == "lark"]
    assert lark["group"].nunique() == 2 and (outs[0].groupby("group")["fold"].nunique() == 1).all()


def _meta(tmp_path, rows):
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    return str(tmp_path / "m.csv")


BAD = [
    # (name, metadata rows or None for a missing file, extra args, message)
    ("metadata missing", None, [], "metadata not found"),
    ("metadata lacks a column", [dict(species="crow", filename="crow/XC1.ogg")], [], "lacks column(s) primary_label"),
    ("metadata without rows", [], [], "has no rows"),
    ("filename escapes --audio", [dict(primary_label="crow", filename="../secret.ogg")], [],
     "point outside --audio"),
    ("absolute filename", [dict(primary_label="crow", filename="/etc/passwd")], [], "point outside --audio"),
    ("label that is a path", [dict(primary_label="../x", filename="crow/XC1.ogg")], [], "is not a plain name"),
    ("two files, one image name", [dict(primary_label="crow", filename="crow/XC1.ogg"),
                                   dict(primary_label="crow", filename="crow/XC1.wav")], [], "would write the same images"),
    ("unknown setting", [dict(primary_label="crow", filename="crow/XC1.ogg")], ["--set", "nmels=64"],
     "unknown spectrogram setting 'nmels'"),
    ("bad setting value", [dict(primary_label="crow", filename="crow/XC1.ogg")], ["--set", "fmax=99999"],
     "fmax <= sample_rate / 2"),
    ("one fold", [dict(primary_label="crow", filename="crow/XC1.ogg")], ["--folds", "1"], "--folds must be >= 2"),
    ("audio folder missing", [dict(primary_label="crow", filename="crow/XC1.ogg")], ["--audio", "{tmp}/nowhere"],
     "is not a folder"),
]


@pytest.mark.parametrize("name,rows,args,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_before_any_work_in_one_line(name, rows, args, message, tmp_path):
    (tmp_path / "audio" / "crow").mkdir(parents=True)
    metadata = _meta(tmp_path, rows) if rows is not None else str(tmp_path / "none.csv")
    if rows == []:
        (tmp_path / "m.csv").write_text("primary_label,filename\n")
    args = [a.format(tmp=tmp_path) for a in args]
    audio_arg = [] if "--audio" in args else ["--audio", str(tmp_path / "audio")]
    r = run(*audio_arg, "--metadata", metadata, "--out", str(tmp_path / "Data"), *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "Data").exists()  # nothing written


def test_an_output_folder_holding_another_dataset_is_refused_not_mixed(birdclef, tmp_path):
    root, _, _ = birdclef
    before = sorted(p for p in (root / "Data").rglob("*"))
    r = run("--audio", str(root / "train_audio"), "--metadata", str(root / "train_metadata.csv"),
            "--out", str(root / "Data"), "--set", "n_mels=64")
    assert r.returncode == 2 and "holds a dataset made with other settings (spectrogram n_mels 128, now 64)" in r.stderr
    r = run("--audio", str(root / "train_audio"), "--metadata", str(root / "train_metadata.csv"),
            "--out", str(root / "Data"), "--max-windows", "1")
    assert r.returncode == 2 and "(--max-windows 0, now 1)" in r.stderr
    assert sorted(p for p in (root / "Data").rglob("*")) == before
    (tmp_path / "notebook").mkdir()
    (tmp_path / "notebook" / "train.csv").write_text("image_path,label\n")
    r = run("--audio", str(root / "train_audio"), "--metadata", str(root / "train_metadata.csv"),
            "--out", str(tmp_path / "notebook"))
    assert r.returncode == 2 and "holds files not made by core.prepare" in r.stderr
    assert [p.name for p in (tmp_path / "notebook").iterdir()] == ["train.csv"]


def test_nothing_usable_exits_non_zero_and_lists_every_file(tmp_path):
    (tmp_path / "audio" / "crow").mkdir(parents=True)
    (tmp_path / "audio" / "crow" / "XC1.ogg").write_bytes(b"junk")
    r = run("--audio", str(tmp_path / "audio"), "--metadata",
            _meta(tmp_path, [dict(primary_label="crow", filename="crow/XC1.ogg"),
                             dict(primary_label="crow", filename="crow/XC2.ogg")]), "--out", str(tmp_path / "Data"))
    assert r.returncode == 1 and "nothing usable: all 2 recordings were skipped" in r.stderr
    assert len(pd.read_csv(tmp_path / "Data" / "prepare_errors.csv")) == 2
    assert not (tmp_path / "Data" / "train.csv").exists()


def test_max_windows_keeps_the_first_windows(tmp_path):
    meta = birdsong.make_birdclef(tmp_path, species=("crow", "duck"), recordings=[(16.0, 32000, 1, "WAV")] * 5)
    r = run("--audio", str(tmp_path / "train_audio"), "--metadata", str(tmp_path / "train_metadata.csv"),
            "--out", str(tmp_path / "Data"), "--max-windows", "2")
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "Data" / "train.csv")
    assert len(table) == 2 * len(meta) and set(table.groupby("group").size()) == {2}
    # 16 s: windows 0-5, 5-10 kept, 10-15 past --max-windows, the last 1 s dropped anyway
    assert "dropped 10.0 s (final parts under 2.5 s), 50.0 s past --max-windows" in r.stdout


def test_prepare_loads_no_torch_timm_or_ray():
    """core.prepare runs where only the audio stack is needed: importing it loads none of the training stack."""
    code = ("import sys, core.prepare; "
            "print(sorted(m for m in ('torch', 'timm', 'ray', 'albumentations', 'optuna') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    # the file it writes is the one the search and predict read beside the CSV
    from core import data

    assert prepare.DATASET_FILE is data.DATASET_FILE == "prepare.yaml"
