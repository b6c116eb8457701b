"""core.data: CSV validation, path forms, the notebook's resampling, decoding, mixup datasets."""

import cv2
import numpy as np
import pandas as pd
import pytest

from core.data import (DataError, TrainDataset, EvalDataset, decode_image, decode_images, read_table,
                       resample, split_folds)


def notebook_resample(train_dataset, n=500, floor=50):
    """The notebook's loop, copied verbatim but for the loop variable names."""
    label = train_dataset["label"].unique().tolist()
    for i, g in enumerate(label):
        sample_df = train_dataset[train_dataset["label"] == g]
        if len(sample_df) >= n:
            sample_df = sample_df.sample(n=n, replace=False, random_state=1).reset_index(drop=True)
        elif len(sample_df) < floor:
            sample_df = sample_df.sample(n=floor, replace=True, random_state=1).reset_index(drop=True)
        if i == 0:
            new_df = sample_df
        else:
            new_df = pd.concat([new_df, sample_df], axis=0).reset_index(drop=True)
    return new_df


def _table(counts: dict[int, int]) -> pd.DataFrame:
    rows = [dict(image_path=f"img_{lab}_{k}.png", label=lab) for lab, n in counts.items() for k in range(n)]
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)
    return df


def test_resample_selects_exactly_the_notebooks_rows():
    # classes above, exactly at and just under the cap; exactly at, just under and far under the floor
    df = _table({7: 812, 3: 500, 0: 499, 5: 50, 9: 49, 2: 3, 4: 120})
    ours = resample(df, cap=500, floor=50, seed=1)
    theirs = notebook_resample(df)
    assert ours["image_path"].tolist() == theirs["image_path"].tolist()
    sizes = ours.groupby("label", sort=False).size()
    assert sizes.to_dict() == {7: 500, 3: 500, 0: 499, 5: 50, 9: 50, 2: 50, 4: 120}
    # classes come out in order of first appearance
    assert ours["label"].drop_duplicates().tolist() == df["label"].drop_duplicates().tolist()


def test_resample_edges():
    df = _table({1: 10, 2: 4})
    exactly_cap = resample(df, cap=10, floor=2, seed=1)
    assert sorted(exactly_cap[exactly_cap.label == 1].image_path) == sorted(df[df.label == 1].image_path)
    # exactly the floor: kept whole and in the original order
    at_floor = resample(df, cap=0, floor=4, seed=1)
    assert at_floor[at_floor.label == 2].image_path.tolist() == df[df.label == 2].image_path.tolist()
    # an empty class (a label with no rows) produces nothing; an empty table stays empty
    assert set(resample(df, 5, 2).label) == {1, 2}
    assert len(resample(df.iloc[:0], 5, 2)) == 0
    # no cap and no floor: every row once, grouped by class in order of first appearance (as the loop does)
    grouped = pd.concat([df[df.label == g] for g in df.label.unique()])
    assert resample(df, 0, 0).image_path.tolist() == grouped.image_path.tolist()
    with pytest.raises(ValueError, match="cap"):
        resample(df, cap=2, floor=5)


def _write_images(folder, n, shape=(32, 64), color=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(n):
        img = rng.integers(0, 255, shape, dtype=np.uint8)
        cv2.imwrite(str(folder / f"x{k}.png"), cv2.merge([img, img, img]) if color else img)


def test_path_forms_windows_backslashes_csv_relative_cwd_relative_and_absolute(tmp_path, monkeypatch):
    _write_images(tmp_path / "data" / "train_img" / "sp", 3)
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
    _write_images(tmp_path / "img", 4)
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
    _write_images(tmp_path, 1, shape=(64, 160), color=True)
    raw = cv2.imread(str(tmp_path / "x0.png"), cv2.IMREAD_GRAYSCALE)
    img = decode_image(str(tmp_path / "x0.png"), 32)
    assert img.dtype == np.uint8 and img.shape == (32, 80)
    np.testing.assert_array_equal(img, cv2.resize(raw, (80, 32), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(decode_image(str(tmp_path / "x0.png"), 64), raw)


def test_decode_errors(tmp_path):
    _write_images(tmp_path, 2, shape=(32, 64))
    _write_images(tmp_path / "wide", 1, shape=(32, 90))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths = [str(tmp_path / "x0.png"), str(tmp_path / "x1.png")]
    arr = decode_images(paths, 32)
    assert arr.shape == (2, 32, 64) and arr.dtype == np.uint8 and arr.flags["C_CONTIGUOUS"]
    with pytest.raises(DataError, match=r"1 image\(s\) could not be decoded: .*broken.png"):
        decode_images(paths + [str(tmp_path / "broken.png")], 32)
    with pytest.raises(DataError, match="images differ in size"):
        decode_images(paths + [str(tmp_path / "wide" / "x0.png")], 32)


def _images(n=20, classes=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 8, 12), dtype=np.uint8)
    labels = np.arange(n) % classes
    return images, labels


def test_mixup_partners_are_of_another_class_and_targets_are_soft():
    images, labels = _images()
    ds = TrainDataset(images, np.arange(20), labels, num_classes=4, transform=None, mixup_p=1.0, seed=3)
    mixed = 0
    for i in range(len(ds)):
        img, target = ds[i]
        assert img.shape == (1, 8, 12) and img.dtype.is_floating_point is False
        t = target.numpy()
        assert t.dtype == np.float32 and abs(t.sum() - 1) < 1e-6 and (t >= 0).all()
        own = t[labels[i]]
        others = [c for c in np.flatnonzero(t) if c != labels[i]]
        assert len(others) <= 1
        if others:
            mixed += 1
            # the image is the notebook's uint8 blend of this row and a row of the partner class
            w = own
            candidates = [j for j in range(20) if labels[j] == others[0]]
            assert any(np.array_equal(img[0].numpy(), (images[i] * w + images[j] * (1 - w)).astype(np.uint8))
                       for j in candidates)
    assert mixed >= 15  # Beta(0.2, 0.2) weights are rarely exactly 0 or 1


def test_no_mixup_gives_one_hot_and_samples_are_reproducible():
    images, labels = _images()
    ds = TrainDataset(images, np.arange(20), labels, num_classes=4, mixup_p=0.0, seed=3)
    img, t = ds[5]
    assert t.tolist() == [0, 1, 0, 0] and np.array_equal(img[0].numpy(), images[5])
    mix = TrainDataset(images, np.arange(20), labels, num_classes=4, mixup_p=1.0, seed=3)
    a, b = mix[4], mix[4]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    mix.set_epoch(1)
    assert not np.array_equal(mix[4][1], a[1])


def test_eval_dataset():
    images, labels = _images()
    ds = EvalDataset(images, np.array([3, 1]), labels[[3, 1]])
    img, y = ds[0]
    assert img.shape == (1, 8, 12) and y == 3 and np.array_equal(img[0].numpy(), images[3])
