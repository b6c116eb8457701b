"""Images/s of birdtune's training data path vs a faithful copy of the notebook's Dataset, one run.

    python tests/bench/loader.py [--size default] [--items 2000] [--threads 1]

Both sides read the same demo images, apply the same augmentations (core.transforms.train_transform)
with mixup on every sample, and end in a float batch in [0, 1] on the CPU. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from core import demo
from core.data import load_data, read_table
from core.augment import BatchAugment
from core.datasets import BatchTrainSet, EpochKeyedTrainSet, EpochSampler
from core.transforms import train_transform


class NotebookDataset(Dataset):
    """The notebook's Customize_Dataset, verbatim but for CFG['num_classes'] passed in."""

    def __init__(self, df, transforms=None, mixup=0, num_classes=0):
        self.df, self.transforms, self.mixup, self.num_classes = df, transforms, mixup, num_classes

    def mixup_aug(self, img_1, mask_1, img_2, mask_2):
        weight = np.random.beta(a=0.2, b=0.2)
        img = img_1 * weight + img_2 * (1 - weight)
        mask = mask_1 * weight + mask_2 * (1 - weight)
        return img.astype(np.uint8), mask

    def read_data(self, data):
        img = cv2.imread(data["image_path"])
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        label = [0] * self.num_classes
        cls = data["label"]
        label[cls] = 1
        label = np.array(label)
        return img, label

    def __getitem__(self, index):
        data = self.df.loc[index]
        img, label = self.read_data(data)
        if self.mixup and np.random.rand() >= (1 - self.mixup):
            img_1 = img
            label_1 = np.array(label)
            while True:
                indx = np.random.randint(len(self.df))
                data = self.df.loc[indx]
                img_2, label_2 = self.read_data(data)
                if label_1.argmax(0) != label_2.argmax(0):
                    break
            img, label = self.mixup_aug(img_1, label_1, img_2, label_2)
        if self.transforms:
            img = self.transforms(image=img)["image"]
        return {"image": torch.tensor(img / 255, dtype=torch.float32),
                "label": torch.tensor(label, dtype=torch.float32)}

    def __len__(self):
        return len(self.df)


def notebook_transform(img_size):
    import albumentations as A

    return A.Compose(list(train_transform(img_size).transforms) + [ToTensorV2(p=1.0)])


def images_per_s(loader, items: int, to_float: bool, augment=None) -> float:
    n, t0 = 0, time.perf_counter()
    g = torch.Generator()
    for step, batch in enumerate(loader):
        x = batch["image"] if isinstance(batch, dict) else batch[0]
        if augment is not None:  # on the training device; here the CPU
            x = augment(x, g.manual_seed(step))
        if to_float:
            x = x.float().div_(255)  # ours scales on the device; on the CPU it is this
        n += len(x)
        if n >= items:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="default")
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the multi-process rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    ov = demo.demo_overrides(args.size)
    table, c = read_table(ov["csv"])
    df = pd.DataFrame({"image_path": table["path"], "label": table["label"]})
    np.random.seed(0)

    t0 = time.perf_counter()
    data = load_data(ov["csv"], ov["img_size"], image_cache="off")  # decoded into this process's memory
    decode_s = time.perf_counter() - t0
    cached = load_data(ov["csv"], ov["img_size"])  # the image cache file, mapped (what searches use)

    def ours(workers):
        ds = EpochKeyedTrainSet(data.images, np.arange(len(df)), df["label"].to_numpy(), c,
                         train_transform(ov["img_size"]), mixup_p=1.0, mixup_alpha=0.2, seed=0)
        return DataLoader(ds, batch_size=64, sampler=EpochSampler(len(ds), 0), num_workers=workers)

    def batched(workers, pin=False, images=None):
        ds = BatchTrainSet(data.images if images is None else images, np.arange(len(df)), df["label"].to_numpy(), c, 64, 1.0, 0.2, 0)
        return DataLoader(ds, batch_size=None, sampler=EpochSampler(len(ds), 0, shuffle=False), num_workers=workers,
                          pin_memory=pin)

    def notebook(workers):
        ds = NotebookDataset(df, notebook_transform(ov["img_size"]), mixup=True, num_classes=c)
        return DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers)

    rows = []
    paths = (("notebook Dataset", notebook, None), ("birdtune per-sample", ours, None),
             ("birdtune batch", batched, BatchAugment()),
             ("birdtune batch, mapped cache", lambda w: batched(w, images=cached.images), BatchAugment()))
    for name, make, augment in paths:
        for workers in (0, args.workers):
            rate = images_per_s(make(workers), args.items, name != "notebook Dataset", augment)
            rows.append((name, workers, rate))
    if torch.cuda.is_available():  # pinned host memory only exists beside a CUDA device
        rate = images_per_s(batched(args.workers, pin=True), args.items, True, BatchAugment())
        rows.append(("birdtune batch, pinned", args.workers, rate))
    base = {w: r for n, w, r in rows if n == "notebook Dataset"}
    print(f"demo '{args.size}': {len(df)} images of {data.images.shape[1]}x{data.images.shape[2]}, "
          f"{args.items} training samples per row, mixup on every sample, torch threads {args.threads}")
    print(f"birdtune decodes all images once first: {decode_s:.2f} s ({len(df) / decode_s:.0f} images/s, "
          f"{data.nbytes / 1e6:.1f} MB); the mapped-cache row reads the same images from the image cache file "
          f"({cached.how}: {cached.cache.path})")
    print("per-sample = albumentations per sample (augment=albumentations); batch = the default (augment=batch)")
    if not torch.cuda.is_available():
        print("no CUDA device: the pinned-memory row (DataLoader pin_memory=True) is left out")
    print(f"{'data path':<30}{'workers':>8}{'images/s':>12}{'vs notebook':>13}")
    for name, workers, rate in rows:
        print(f"{name:<30}{workers:>8}{rate:>12.0f}{rate / base[workers]:>12.2f}x")


if __name__ == "__main__":
    main()
