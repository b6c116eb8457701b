"""What one training run reads: the training and validation rows (folds, the notebook's per-class resampling),
the datasets and samplers that serve them, and the DataLoaders fit iterates. Every random draw depends only on
(seed, epoch, index or batch), so a run resumed from a checkpoint sees what an uninterrupted one would, whatever
the number of DataLoader workers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core.augment import BatchAugment, mixup_batch
from core.config import TrainConfig
from core.data import DecodedData, split_folds
from core.transforms import test_transform, train_transform


def resample(df: pd.DataFrame, cap: int = 500, floor: int = 50, seed: int = 1) -> pd.DataFrame:
    """The notebook's per-class loop: classes in order of first appearance; >= cap rows are
    sampled down to cap without replacement, < floor rows up to floor with replacement, the rest
    kept whole. cap=0 / floor=0 switch either side off."""
    if cap and floor and cap < floor:
        raise ValueError(f"cap ({cap}) must be >= floor ({floor})")
    parts = []
    for label in df["label"].unique().tolist():
        part = df[df["label"] == label]
        if cap and len(part) >= cap:
            part = part.sample(n=cap, replace=False, random_state=seed)
        elif floor and len(part) < floor:
            part = part.sample(n=floor, replace=True, random_state=seed)
        parts.append(part)
    if not parts:
        return df.iloc[:0].reset_index(drop=True)
    return pd.concat(parts, axis=0).reset_index(drop=True)


class TrainDataset(Dataset):
    """Training samples from decoded images: the notebook's mixup (Beta(alpha, alpha) weight, a
    partner of another class, probability p, soft targets) then augmentation.

    Randomness is derived from (seed, epoch, index), so a sample is the same whatever the number
    of DataLoader workers and a resumed run sees exactly what an uninterrupted one would.
    Returns a (1, H, W) uint8 tensor (scaling to [0, 1] happens on the device) and a float32
    target of length num_classes summing to 1.
    """

    def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray, num_classes: int,
                 transform=None, mixup_p: float = 1.0, mixup_alpha: float = 0.2, seed: int = 0):
        self.images, self.index = images, np.asarray(index, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.num_classes, self.transform = num_classes, transform
        self.mixup_p, self.mixup_alpha, self.seed = mixup_p, mixup_alpha, seed
        self.epoch = 0
        self._can_mix = len(np.unique(self.labels)) > 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img = self.images[self.index[i]]
        label = self.labels[i]
        target = np.zeros(self.num_classes, np.float32)
        if self._can_mix and self.mixup_p > 0 and rng.random() < self.mixup_p:
            while True:  # the notebook's rejection loop: uniform over rows of another class
                j = int(rng.integers(len(self.index)))
                if self.labels[j] != label:
                    break
            w = rng.beta(self.mixup_alpha, self.mixup_alpha)
            img = (img * w + self.images[self.index[j]] * (1 - w)).astype(np.uint8)
            target[label] += w
            target[self.labels[j]] += 1 - w
        else:
            target[label] = 1.0
        if self.transform is not None:
            self.transform.set_random_seed(int(rng.integers(2**31)))
            img = self.transform(image=img)["image"]
        return torch.from_numpy(_writable(img))[None], torch.from_numpy(target)


class EvalDataset(Dataset):
    """Validation samples: (1, H, W) uint8 tensor and the integer label."""

    def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.index, self.labels, self.transform = images, np.asarray(index), np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        img = self.images[self.index[i]]
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        return torch.from_numpy(_writable(img))[None], int(self.labels[i])


def _writable(img: np.ndarray) -> np.ndarray:
    """Images shared through Ray's object store are read-only views; torch wants its own memory."""
    return img if img.flags.writeable and img.flags.c_contiguous else np.array(img, order="C")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of an epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).numpy()


class EpochSampler(Sampler):
    """Yields (epoch, index) keys, shuffled by epoch_order or in order, so the order and each
    sample's (or batch's) randomness depend only on the epoch, in workers too."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, self.seed, self.epoch).tolist() if self.shuffle else range(self.n)
        return iter([(self.epoch, i) for i in order])


class EpochKeyedTrainSet(TrainDataset):
    """TrainDataset keyed by (epoch, index): the sample's randomness follows the epoch in DataLoader workers too."""

    def __getitem__(self, key):
        epoch, i = key
        self.epoch = epoch
        return super().__getitem__(i)


class BatchTrainSet(torch.utils.data.Dataset):
    """Whole training batches, mixed up but not yet augmented, keyed by (epoch, batch number):
    one fancy-indexing gather per batch instead of one Python call per sample. The order and the
    mixup draws depend only on (seed, epoch, batch), in DataLoader workers too."""

    def __init__(self, images: np.ndarray, index: np.ndarray, labels: np.ndarray, num_classes: int,
                 batch_size: int, mixup_p: float, mixup_alpha: float, seed: int):
        self.images, self.index, self.labels = images, np.asarray(index, np.int64), np.asarray(labels, np.int64)
        self.num_classes, self.batch_size = num_classes, batch_size
        self.mixup_p, self.mixup_alpha, self.seed = mixup_p, mixup_alpha, seed
        n = len(self.index)
        self.n_batches = n // batch_size + (n % batch_size > 1)  # a lone last sample would break BatchNorm
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n_batches

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.index), self.seed, epoch))
        return self._order[1]

    def __getitem__(self, key: tuple[int, int]):
        epoch, k = key
        rows = self.order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, k])
        imgs, target = mixup_batch(self.images, self.index, self.labels, rows, self.num_classes,
                                   self.mixup_p, self.mixup_alpha, rng)
        return torch.from_numpy(imgs), torch.from_numpy(target)


@dataclass
class Loaders:
    """The DataLoaders of one run, with what the loop needs beside them."""

    train: DataLoader
    sampler: EpochSampler  # set_epoch(epoch) before each epoch
    val: DataLoader
    n_train: int  # training images an epoch sees (for images_per_s)
    augmenter: BatchAugment | None  # the batch augmentation to run on the device (augment=batch)


def make_loaders(cfg: TrainConfig, data: DecodedData, num_classes: int, pin_memory: bool = False) -> Loaders:
    """The training rows (every fold but cfg.fold, resampled per class) and the validation rows as DataLoaders:
    whole batches augmented on the device (augment=batch) or per sample with albumentations."""
    table = data.table.assign(idx=np.arange(len(data.table)))
    train_df, val_df = split_folds(table, cfg.fold)
    train_df = resample(train_df, cfg.class_cap, cfg.class_floor, cfg.resample_seed)
    index, labels = train_df["idx"].to_numpy(), train_df["label"].to_numpy()
    kw = dict(num_workers=cfg.num_workers, pin_memory=pin_memory, persistent_workers=cfg.num_workers > 0)
    if cfg.augment == "batch":
        train_set = BatchTrainSet(data.images, index, labels, num_classes, cfg.batch_size, cfg.mixup_p,
                                  cfg.mixup_alpha, cfg.seed)
        sampler = EpochSampler(len(train_set), cfg.seed, shuffle=False)  # batches are shuffled inside
        train = DataLoader(train_set, batch_size=None, sampler=sampler, **kw)
        n_train, augmenter = min(len(index), len(train_set) * cfg.batch_size), BatchAugment()
    else:
        train_ds = EpochKeyedTrainSet(data.images, index, labels, num_classes, train_transform(cfg.img_size),
                                      cfg.mixup_p, cfg.mixup_alpha, cfg.seed)
        sampler = EpochSampler(len(train_ds), cfg.seed)
        # a last batch of one sample breaks BatchNorm in training mode: drop only that lone sample
        lone = len(train_ds) % cfg.batch_size == 1
        train = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=lone, **kw)
        n_train, augmenter = len(train_ds) - lone, None
    val_ds = EvalDataset(data.images, val_df["idx"].to_numpy(), val_df["label"].to_numpy(), test_transform(cfg.img_size))
    val = DataLoader(val_ds, batch_size=cfg.eval_batch_size, shuffle=False, **kw)
    return Loaders(train, sampler, val, n_train, augmenter)
