"""core.transforms: albumentations 2.0.8 pipelines with the notebook's 1.x strengths."""
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest

from core.transforms import GAUSS_NOISE_STD_RANGE, test_transform, train_transform


def test_pipelines_build_without_any_albumentations_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ignored (invalid) argument would warn
        train_transform(64, seed=1)
        test_transform(64, seed=1)


def test_invalid_arguments_are_errors_not_silent_no_ops():
    from core.transforms import _compose

    with pytest.raises(UserWarning, match="max_holes"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            _compose([A.CoarseDropout(max_holes=4)], seed=1)


@pytest.mark.parametrize("shape,size,out", [((64, 128), 64, (64, 128)), ((128, 313), 64, (64, 156)),
                                            ((32, 64), 64, (64, 128))])
def test_output_shapes_and_dtypes(shape, size, out):
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    for t in (train_transform(size, seed=0), test_transform(size, seed=0)):
        res = t(image=img)["image"]
        assert res.shape == out and res.dtype == np.uint8


def test_steps_and_probabilities_match_the_notebook():
    steps = train_transform(128).transforms
    assert [type(s).__name__ for s in steps] == ["SmallestMaxSize", "RandomBrightnessContrast", "GaussNoise",
                                                 "OneOf", "Affine"]
    assert [s.p for s in steps] == [1, 0.5, 0.3, 0.5, 0.7]
    assert steps[0].interpolation == cv2.INTER_AREA
    rbc = steps[1]
    assert tuple(rbc.brightness_limit) == (-0.2, 0.2) and tuple(rbc.contrast_limit) == (-0.2, 0.2)
    aff = steps[4]
    assert aff.keep_ratio and aff.border_mode == cv2.BORDER_CONSTANT and aff.fill == 0
    assert tuple(aff.scale["x"]) == (0.85, 1.15) and tuple(aff.translate_percent["x"]) == (-0.05, 0.05)
    assert tuple(aff.rotate) == (0, 0)
    assert [type(s).__name__ for s in test_transform(128).transforms] == ["SmallestMaxSize"]


def test_gauss_noise_has_the_1x_strength_not_the_2x_default():
    assert GAUSS_NOISE_STD_RANGE == pytest.approx((0.0124, 0.0277), abs=1e-4)
    noise = train_transform(64).transforms[2]
    img = np.full((64, 128), 128, np.uint8)
    stds = []
    for seed in range(300):
        noise.set_random_seed(seed)
        stds.append((noise(image=img)["image"].astype(float) - 128).std())
    applied = [s for s in stds if s > 0]
    assert 0.2 < len(applied) / len(stds) < 0.4  # p=0.3
    # 1.x: var in (10, 50) -> std 3.2..7.1 grey levels (a little less after uint8 truncation);
    # the 2.x default std_range (0.2, 0.44) would give 51..112
    assert 2.5 < min(applied) and max(applied) < 7.5 and 4.0 < np.mean(applied) < 5.5


@pytest.mark.parametrize("branch,holes,h,w", [(0, 8, 10, 16), (1, 4, 8, 8)])
def test_dropout_branches_are_the_old_cutout_and_coarse_dropout(branch, holes, h, w):
    t = train_transform(128).transforms[3].transforms[branch]
    img = np.full((128, 313), 255, np.uint8)
    for seed in range(20):
        t.set_random_seed(seed)
        rects = t.get_params_dependent_on_data({"shape": img.shape}, {"image": img})["holes"]
        assert len(rects) == holes
        assert ((rects[:, 3] - rects[:, 1]) == h).all() and ((rects[:, 2] - rects[:, 0]) == w).all()
        out = t.apply(img, holes=rects, seed=seed)
        assert 0 < (out == 0).sum() <= holes * h * w  # black (fill 0), overlapping at most


def test_reproducible_per_seed():
    img = np.random.default_rng(0).integers(0, 255, (64, 128), dtype=np.uint8)
    outs = []
    for seed in (5, 5, 6):
        t = train_transform(64, seed=seed)
        outs.append(np.stack([t(image=img)["image"] for _ in range(6)]))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
