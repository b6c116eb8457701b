"""core.datasets: the notebook's per-class resampling, the mixup training set and the validation set."""

import numpy as np
import pandas as pd
import pytest

from helpers import label_images, label_table

from core.datasets import EvalDataset, TrainDataset, resample


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


def test_resample_selects_exactly_the_notebooks_rows():
    # classes above, exactly at and just under the cap; exactly at, just under and far under the floor
    df = label_table({7: 812, 3: 500, 0: 499, 5: 50, 9: 49, 2: 3, 4: 120})
    ours = resample(df, cap=500, floor=50, seed=1)
    theirs = notebook_resample(df)
    assert ours["image_path"].tolist() == theirs["image_path"].tolist()
    sizes = ours.groupby("label", sort=False).size()
    assert sizes.to_dict() == {7: 500, 3: 500, 0: 499, 5: 50, 9: 50, 2: 50, 4: 120}
    # classes come out in order of first appearance
    assert ours["label"].drop_duplicates().tolist() == df["label"].drop_duplicates().tolist()


def test_resample_edges():
    df = label_table({1: 10, 2: 4})
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


def test_mixup_partners_are_of_another_class_and_targets_are_soft():
    images, labels = label_images()
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
    images, labels = label_images()
    ds = TrainDataset(images, np.arange(20), labels, num_classes=4, mixup_p=0.0, seed=3)
    img, t = ds[5]
    assert t.tolist() == [0, 1, 0, 0] and np.array_equal(img[0].numpy(), images[5])
    mix = TrainDataset(images, np.arange(20), labels, num_classes=4, mixup_p=1.0, seed=3)
    a, b = mix[4], mix[4]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    mix.set_epoch(1)
    assert not np.array_equal(mix[4][1], a[1])


def test_eval_dataset():
    images, labels = label_images()
    ds = EvalDataset(images, np.array([3, 1]), labels[[3, 1]])
    img, y = ds[0]
    assert img.shape == (1, 8, 12) and y == 3 and np.array_equal(img[0].numpy(), images[3])
