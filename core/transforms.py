"""The notebook's albumentations 1.x pipelines rebuilt on albumentations 2.0.8 with the same strengths."""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

# albumentations 1.x GaussNoise drew var from (10, 50) in 0-255 units: std 3.16..7.07 of 255.
GAUSS_NOISE_STD_RANGE = (10**0.5 / 255, 50**0.5 / 255)


def _compose(transforms: list, seed: int | None) -> A.Compose:
    # albumentations 2 only warns about invalid arguments and then ignores them; a silently
    # dropped augmentation is a silent behaviour change, so any such warning is an error here.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return A.Compose(transforms, seed=seed)


def train_transform(img_size: int, seed: int | None = None) -> A.Compose:
    """SmallestMaxSize, RandomBrightnessContrast, GaussNoise, OneOf[Cutout, CoarseDropout], Affine."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        steps = [
            A.SmallestMaxSize(max_size=img_size, interpolation=cv2.INTER_AREA, p=1),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussNoise(std_range=GAUSS_NOISE_STD_RANGE, p=0.3),
            A.OneOf(
                [
                    # 1.x Cutout(max_h_size=10, max_w_size=16): num_holes=8, fixed 10x16 holes, fill 0
                    A.CoarseDropout(num_holes_range=(8, 8), hole_height_range=(10, 10),
                                    hole_width_range=(16, 16), fill=0, p=1),
                    # 1.x CoarseDropout(max_holes=4): min_holes=max_holes, 8x8 holes, fill 0
                    A.CoarseDropout(num_holes_range=(4, 4), hole_height_range=(8, 8),
                                    hole_width_range=(8, 8), fill=0, p=1),
                ],
                p=0.5,
            ),
            # 1.x ShiftScaleRotate(shift 0.05, scale 0.15, rotate 0, border_mode=0): one scale for
            # both axes (keep_ratio), independent shifts, constant black border.
            A.Affine(scale=(0.85, 1.15), keep_ratio=True, translate_percent=(-0.05, 0.05), rotate=0,
                     interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.7),
        ]
    return _compose(steps, seed)


def test_transform(img_size: int, seed: int | None = None) -> A.Compose:
    """SmallestMaxSize only, as the notebook validates."""
    return _compose([A.SmallestMaxSize(max_size=img_size, interpolation=cv2.INTER_AREA, p=1)], seed)


test_transform.__test__ = False  # not a pytest test despite the name
