"""core.augment: each batched step equals albumentations' own on the same parameters; rates and mixup."""
import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric import functional as fgeometric

from core.augment import BatchAugment, mixup_batch
from core.datasets import BatchTrainSet
from core.transforms import train_transform


@pytest.fixture
def imgs():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (6, 64, 128)).astype(np.float32), (0, 0), 2)
    return np.clip(base * 2 - 128, 0, 255).astype(np.uint8)  # smooth, full-range spectrogram-like images


def test_brightness_contrast_equals_albumentations(imgs):
    alphas, betas = np.array([0.8, 1.0, 1.2, 0.93, 1.17, 0.81]), np.array([-0.2, 0.0, 0.2, 0.05, -0.11, 0.19])
    ours = BatchAugment.brightness_contrast(torch.from_numpy(imgs[:, None]).float(),
                                            torch.tensor(alphas, dtype=torch.float32),
                                            torch.tensor(betas * 255, dtype=torch.float32))
    t = train_transform(64).transforms[1]
    for i in range(len(imgs)):
        ref = t.apply(imgs[i], alpha=float(np.float32(alphas[i])), beta=float(np.float32(betas[i] * 255)))
        np.testing.assert_array_equal(ours[i, 0].numpy().astype(np.uint8), ref)


def test_dropout_equals_albumentations_in_both_forms(imgs):
    holes = torch.tensor([[[3, 5, 19, 15], [100, 50, 116, 60], [0, 0, 0, 0]],
                          [[10, 10, 18, 18], [0, 0, 0, 0], [0, 0, 0, 0]]])
    x = torch.from_numpy(imgs[:2, None].copy())
    tensor_form = BatchAugment.dropout(x.float(), holes).to(torch.uint8)  # the GPU path
    off = torch.tensor([False, False])
    cpu_form = BatchAugment._dropout_affine_cv2(x, holes, off, torch.ones(2), torch.zeros(2), torch.zeros(2))
    t = A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(8, 8), hole_width_range=(8, 8), fill=0, p=1)
    for i in range(2):
        real = holes[i][(holes[i, :, 2] > holes[i, :, 0])].numpy()
        ref = t.apply(imgs[i], holes=real, seed=0)
        np.testing.assert_array_equal(tensor_form[i, 0].numpy(), ref)
        np.testing.assert_array_equal(cpu_form[i, 0].numpy(), ref)


def _reference_affine(img, s, tx, ty):
    h, w = img.shape
    m = fgeometric.create_affine_transformation_matrix({"x": tx, "y": ty}, {"x": 0, "y": 0}, {"x": s, "y": s}, 0,
                                                       fgeometric.center((h, w)))
    return train_transform(64).transforms[4].apply(img, matrix=m, output_shape=(h, w))


AFFINES = [(1.0, 0, 0), (0.85, 6, -3), (1.15, -6, 3), (1.03, 2, 1)]


@pytest.mark.parametrize("s,tx,ty", AFFINES)
def test_affine_on_cpu_is_albumentations_exactly(imgs, s, tx, ty):
    ours = BatchAugment.affine(torch.from_numpy(imgs[:1, None].copy()), torch.tensor([True]), torch.tensor([s]),
                               torch.tensor([float(tx)]), torch.tensor([float(ty)]))
    assert ours.dtype == torch.uint8
    np.testing.assert_array_equal(ours[0, 0].numpy(), _reference_affine(imgs[0], s, tx, ty))


@pytest.mark.parametrize("s,tx,ty", AFFINES)
def test_affine_through_grid_sample_matches_albumentations(imgs, s, tx, ty):
    """The GPU branch (grid_sample), run on CPU tensors."""
    ours = BatchAugment._affine_grid(torch.from_numpy(imgs[:1, None].copy()), torch.tensor([True]),
                                     torch.tensor([s]), torch.tensor([float(tx)]), torch.tensor([float(ty)]))
    diff = np.abs(ours[0, 0].numpy().astype(int) - _reference_affine(imgs[0], s, tx, ty).astype(int))
    # cv2 interpolates in 5-bit fixed point, torch in float: at most a grey level or two apart
    assert diff.mean() < 0.6 and np.percentile(diff, 99.5) <= 2, (diff.mean(), diff.max())


def test_rates_and_ranges_match_the_pipeline():
    aug = BatchAugment()
    g = torch.Generator().manual_seed(0)
    n = 20000
    alpha, beta = aug._bc_params(n, g)
    changed = (alpha != 1) | (beta != 0)
    assert 0.48 < changed.float().mean() < 0.52
    assert alpha.min() >= 0.8 and alpha.max() <= 1.2 and beta.abs().max() <= 0.2 * 255
    holes = aug._holes((n, 1, 64, 128), g)
    k = (holes[..., 2] > holes[..., 0]).sum(1)
    assert set(k.tolist()) == {0, 4, 8} and 0.48 < (k > 0).float().mean() < 0.52
    assert 0.45 < (k == 8).float().sum() / (k > 0).float().sum() < 0.55
    eight = holes[k == 8]
    assert ((eight[..., 3] - eight[..., 1]) == 10).all() and ((eight[..., 2] - eight[..., 0]) == 16).all()
    assert (holes[..., 2] <= 128).all() and (holes[..., 3] <= 64).all()
    on, s, tx, ty = aug._affine_params((n, 1, 64, 128), g)
    assert 0.68 < on.float().mean() < 0.72 and s[on].min() >= 0.85 and s[on].max() <= 1.15
    assert (tx == tx.trunc()).all() and tx.abs().max() <= 6 and ty.abs().max() <= 3
    x = torch.full((400, 1, 64, 128), 128, dtype=torch.uint8)
    noisy = aug.noise(x.float(), torch.Generator().manual_seed(1))
    std = (noisy - 128).flatten(1).std(1)
    applied = std[std > 0]
    assert 0.25 < len(applied) / 400 < 0.35 and applied.min() > 2.5 and applied.max() < 7.5


def test_whole_pipeline_is_reproducible_and_keeps_dtype(imgs):
    aug = BatchAugment()
    x = torch.from_numpy(imgs[:, None].copy())
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_mixup_batch_partners_weights_and_targets():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 8, 12), dtype=np.uint8)
    labels = np.arange(30) % 5
    rows = np.arange(30)
    x, t = mixup_batch(images, np.arange(30), labels, rows, 5, p=1.0, alpha=0.2, rng=np.random.default_rng(1))
    assert x.shape == (30, 1, 8, 12) and x.dtype == np.uint8 and t.dtype == np.float32
    np.testing.assert_allclose(t.sum(1), 1, atol=1e-6)
    for i in range(30):
        w = t[i, labels[i]]
        other = [c for c in np.flatnonzero(t[i]) if c != labels[i]]
        assert len(other) == 1
        # the notebook's blend truncated to uint8, rebuilt from the (float32) target weight: both sides
        # round a little, so within one grey level, and equal on most pixels
        blends = [(images[i] * np.float64(w) + images[j] * (1 - np.float64(w))).astype(np.uint8)
                  for j in np.flatnonzero(labels == other[0])]
        diffs = [b.astype(int) - x[i, 0] for b in blends]
        assert any(np.abs(d).max() <= 1 and (d == 0).mean() > 0.5 for d in diffs)
    x0, t0 = mixup_batch(images, np.arange(30), labels, rows, 5, p=0.0, alpha=0.2, rng=np.random.default_rng(1))
    assert np.array_equal(x0[:, 0], images) and np.array_equal(t0.argmax(1), labels) and (t0.max(1) == 1).all()


def test_batch_train_set_covers_every_row_once_per_epoch():
    images = np.arange(21 * 4 * 4, dtype=np.uint8).reshape(21, 4, 4) % 200
    ds = BatchTrainSet(images, np.arange(21), np.arange(21) % 3, 3, batch_size=5, mixup_p=0.0, mixup_alpha=0.2, seed=0)
    assert len(ds) == 4  # 21 = 4 x 5 + a lone sample, which is dropped
    seen = np.concatenate([ds[(0, k)][1].numpy().argmax(1) for k in range(4)])
    assert len(seen) == 20
    order0, order1 = ds.order(0).copy(), ds.order(1).copy()
    assert sorted(order0) == list(range(21)) and not np.array_equal(order0, order1)
