"""Training images/s for one model and image size, one run: the notebook's loop (a faithful copy: its
Dataset, DataLoader, per-step loss.item(), AMP on CUDA), birdtune's core.engine.fit, and a compute-only
bound (one batch already on the device, forward + backward + step, no data loading).

    python tests/bench/throughput.py --device cpu|cuda [--model efficientnet_b0] [--size default]
                                     [--batch 64] [--workers 2] [--steps 30] [--repeats 3]

Targets (issue 5): on CUDA ours >= 90 % of the bound and >= 5x the notebook's loop; on CPU ours >= the
notebook's loop. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from core import demo  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.data import load_data, read_table  # noqa: E402
from core.engine import fit  # noqa: E402
from loader import NotebookDataset, notebook_transform  # noqa: E402


# the notebook's CFG['drop_out'] and CFG['drop_path'], which TrainConfig also defaults to: every row
# trains the same network (stochastic depth costs compute)
NOTEBOOK_DROPS = dict(drop_rate=0.3, drop_path_rate=0.2)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def notebook_loop(df, c, img_size, model_name, device, batch, workers, steps) -> float:
    """The notebook's train_epoch over its Dataset, timed over `steps` steps after 3 warm-up steps."""
    model = timm.create_model(model_name, pretrained=False, num_classes=c, in_chans=3, **NOTEBOOK_DROPS).to(device)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.25)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=3e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    ds = NotebookDataset(df, notebook_transform(img_size), mixup=True, num_classes=c)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    model.train()
    ep_loss, n, t0 = [], 0, None
    for i, data in enumerate(loader):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        imgs = data["image"].to(device)
        labels = data["label"].to(device)
        if imgs.ndim == 4 and imgs.shape[1] == img_size and imgs.shape[-1] == 3:
            imgs = imgs.permute(0, 3, 1, 2)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            preds = model(imgs)
            loss = criterion(preds, labels)
            ep_loss.append(loss.item())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
        if t0 is not None:
            n += len(imgs)
        if i >= steps + 3:
            break
    sync(device)
    return n / (time.perf_counter() - t0)


def ours(csv, img_size, model_name, device, batch, workers, data) -> float:
    """core.engine.fit's own images/s over its second epoch (the training phase, every step): its
    steady state, as the other rows skip their warm-up steps; the first epoch also pays the model's
    first steps and the DataLoader workers' start, once per trial."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(csv=csv, img_size=img_size, model_name=model_name, pretrained=False, epochs=2,
                          batch_size=batch, num_workers=workers, device=device.type, out_dir=out,
                          class_cap=0, class_floor=0)
        summary = fit(cfg, None, data=data)
    return float(summary["history"][-1]["images_per_s"])


def bound(c, shape, model_name, device, batch, steps) -> float:
    """Forward + backward + step on one batch already on the device: no data loading at all."""
    model = timm.create_model(model_name, pretrained=False, num_classes=c, in_chans=3, **NOTEBOOK_DROPS).to(device)
    memory_format = torch.channels_last  # as core.engine.fit (TrainConfig.channels_last)
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=3e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.25)
    x = torch.rand(batch, 3, *shape, device=device).contiguous(memory_format=memory_format)
    y = torch.softmax(torch.rand(batch, c, device=device), 1)
    model.train()
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = criterion(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--size", default="default", help="demo data set (64 x 128 images for 'default')")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=30, help="timed steps of the notebook loop and the bound")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the table shows their medians")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu, or on a GPU machine", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ov = demo.demo_overrides(args.size)
    table, c = read_table(ov["csv"])
    df = pd.DataFrame({"image_path": table["path"], "label": table["label"]})
    np.random.seed(0)
    data = load_data(ov["csv"], ov["img_size"])
    shape = data.images.shape[1:]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, {len(df)} demo images of {shape[0]}x{shape[1]}, batch {args.batch}, "
          f"{args.workers} DataLoader workers, on {name}")
    labels = ("notebook loop", "birdtune core.engine.fit", "compute-only bound")
    runs = {k: [] for k in labels}
    for r in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every row
        runs[labels[0]].append(notebook_loop(df, c, ov["img_size"], args.model, device, args.batch, args.workers,
                                             args.steps))
        runs[labels[1]].append(ours(ov["csv"], ov["img_size"], args.model, device, args.batch, args.workers, data))
        runs[labels[2]].append(bound(c, shape, args.model, device, args.batch, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()) +
              f"  (ours / notebook {runs[labels[1]][-1] / runs[labels[0]][-1]:.2f}x)", flush=True)
    rows = [(k, float(np.median(v))) for k, v in runs.items()]
    nb, top = rows[0][1], rows[2][1]
    print(f"median of {args.repeats} round(s):")
    print(f"{'loop':<26}{'images/s':>10}{'vs notebook':>13}{'of bound':>10}")
    for label, rate in rows:
        print(f"{label:<26}{rate:>10.1f}{rate / nb:>12.2f}x{100 * rate / top:>9.0f}%")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
