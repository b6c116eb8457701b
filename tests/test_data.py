"""core.data: CSV validation, path forms, folds, decoding (the datasets and resampling: test_datasets.py)."""

import cv2
import numpy as np
import pandas as pd
import pytest


from core.data import DataError, decode_image, decode_images, read_table, split_folds


def _writelabel_images(folder, n, shape=(32, 64), color=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(n):
        img = rng.integers(0, 255, shape, dtype=np.uint8)
        cv2.imwrite(str(folder / f"x{k}.png"), cv2.merge([img, img, img]) if color else img)


def test_path_forms_windows_backslashes_csv_relative_cwd_relative_and_absolute(tmp_path, monkeypatch):
    _writelabel_images(tmp_path / "data" / "train_img" / "sp", 3)
    csv = tmp_path / "data" / "train.csv"
    absolute = str(tmp_path / "data" / "train_img" / "sp" / "x2.png")
    pd.DataFrame(dict(
        image_path=["train_img\\sp\\x0.png",            # relative to the CSV, Windows separators
                    "data/train_img/sp/x1.png",          # relative to the working directory
                    absolute],
        label=[0, 1, 1], label_name=["a", "b", "b"], group=["g0", "g1", "g2"], fold=[1.0, 0.0, 1.0],
    )).to_csv(csv, index=False)
    monkeypatch.chdir(tmp_path)
    df, n = read_table(csv)
    assert n == 2 and df["fold"].dtype == np.int64 and df["fold"].tolist() == [1, 0, 1]
    assert df["path"].tolist() == [str(tmp_path / "data/train_img/sp" / f"x{k}.png") for k in range(3)]


@pytest.fixture
def small_csv(tmp_path):
    _writelabel_images(tmp_path / "img", 4)
    csv = tmp_path / "t.csv"
    pd.DataFrame(dict(image_path=[f"img/x{k}.png" for k in range(4)], label=[0, 1, 0, 1],
                      label_name=list("abab"), group=list("ghij"), fold=[0, 0, 1, 1])).to_csv(csv, index=False)
    return csv


def _rewrite(csv, **changes):
    df = pd.read_csv(csv)
    for k, v in changes.items():
        if v is None:
            df = df.drop(columns=[k])
        else:
            df[k] = v
    df.to_csv(csv, index=False)
    return csv


@pytest.mark.parametrize("change,match", [
    (dict(label=None), "lacks column.*label"),
    (dict(fold=None), "lacks column.*fold"),
    (dict(label=[0, 1, 0.5, 1]), "column 'label' must hold integers"),
    (dict(label=[0, "x", 0, 1]), "column 'label' must hold integers"),
    (dict(label=[0, -1, 0, 1]), "negative labels"),
    (dict(image_path=["img/x0.png", "nope/a.png", "nope/b.png", "img/x3.png"]),
     r"2 image\(s\) not found .*nope/a.png, nope/b.png"),
])
def test_validation_errors(small_csv, change, match):
    with pytest.raises(DataError, match=match):
        read_table(_rewrite(small_csv, **change))


def test_missing_csv_and_label_range(small_csv, tmp_path):
    with pytest.raises(DataError, match="CSV not found"):
        read_table(tmp_path / "none.csv")
    with pytest.raises(DataError, match=r"label\(s\) outside 0..0 .* set num_classes >= 2"):
        read_table(small_csv, num_classes=1)
    assert read_table(small_csv, num_classes=5)[1] == 5


def test_empty_folds(small_csv):
    df, _ = read_table(small_csv)
    with pytest.raises(DataError, match=r"fold 7 has no rows to validate on; the CSV's folds are \[0, 1\]"):
        split_folds(df, 7)
    with pytest.raises(DataError, match="no training rows outside fold 0"):
        split_folds(df[df.fold == 0], 0)


def test_decode_keeps_one_channel_and_resizes_like_smallest_max_size(tmp_path):
    _writelabel_images(tmp_path, 1, shape=(64, 160), color=True)
    raw = cv2.imread(str(tmp_path / "x0.png"), cv2.IMREAD_GRAYSCALE)
    img = decode_image(str(tmp_path / "x0.png"), 32)
    assert img.dtype == np.uint8 and img.shape == (32, 80)
    np.testing.assert_array_equal(img, cv2.resize(raw, (80, 32), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(decode_image(str(tmp_path / "x0.png"), 64), raw)


def test_decode_errors(tmp_path):
    _writelabel_images(tmp_path, 2, shape=(32, 64))
    _writelabel_images(tmp_path / "wide", 1, shape=(32, 90))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths = [str(tmp_path / "x0.png"), str(tmp_path / "x1.png")]
    arr = decode_images(paths, 32)
    assert arr.shape == (2, 32, 64) and arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    with pytest.raises(DataError, match=r"1 image\(s\) could not be decoded: .*broken.png"):
        decode_images(paths + [str(tmp_path / "broken.png")], 32)
    with pytest.raises(DataError, match="images differ in size"):
        decode_images(paths + [str(tmp_path / "wide" / "x0.png")], 32)


