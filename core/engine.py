"""fit(cfg, report): train and validate per epoch, checkpoint, resume exactly, report metrics."""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from core import checkpoint
from core.augment import BatchAugment, mixup_batch
from core.config import ConfigError, TrainConfig
from core.data import DataError, DecodedData, EvalDataset, TrainDataset, load_data, resample, split_folds
from core.losses import build_loss
from core.metrics import all_metrics
from core.model import build_model
from core.transforms import test_transform, train_transform

Report = Callable[[dict[str, Any], "str | None"], None]
CHECK_EVERY = 20  # steps between host-side checks of the running loss (a sync on CUDA)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device; use device=auto or cpu")
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """fp16 autocast on CUDA by default; CPU runs fp32 unless asked. amp='fp16' on the CPU runs the CUDA
    path's autocast and loss scaling there (torch.amp.GradScaler('cpu')): slower than fp32 on most CPUs,
    it is how the tests execute that path without a GPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    return torch.float16


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


class _EpochKeyed(TrainDataset):
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


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            span = max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
        return 1.0

    return f


def prepare(cfg: TrainConfig, data: DecodedData | None = None, progress: bool = False) -> tuple[DecodedData, int]:
    """Decoded data for cfg (loaded unless given) and the class count to train with."""
    if data is None:
        if not cfg.csv:
            raise DataError("csv is empty; give a CSV path (core.train and search.run fill in the demo data)")
        data = load_data(cfg.csv, cfg.img_size, cfg.num_classes, progress=progress,
                         memory_limit_gb=cfg.memory_limit_gb, image_cache=cfg.image_cache)
    if data.images is None:
        raise DataError(data.missing)
    if data.img_size != cfg.img_size:
        raise ConfigError(f"img_size={cfg.img_size} but the shared images were decoded at {data.img_size} px")
    num_classes = cfg.num_classes or data.num_classes
    if num_classes < data.num_classes:
        raise ConfigError(f"num_classes={num_classes} but the CSV has labels up to {data.num_classes - 1}")
    return data, num_classes


def fit(cfg: TrainConfig, report: Report | None = None, *, data: DecodedData | None = None,
        resume_from: str | Path | None = None, progress: bool = False,
        loss_factory: Callable[[str, float], torch.nn.Module] = build_loss) -> dict[str, Any]:
    """Train cfg.epochs epochs (continuing from `resume_from`'s last.pt if given).

    After every epoch, writes best.pt / last.pt / metrics.csv to cfg.out_dir and calls
    report(metrics, out_dir). A non-finite training loss ends the run with status 'diverged'
    (reported, not raised). `loss_factory(cfg.loss, cfg.label_smoothing)` builds the criterion.
    Returns a summary: status, best_cmap, best_epoch, epochs_run, history.
    """
    cfg.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    device = resolve_device(cfg.device)
    dtype = amp_dtype(cfg.amp, device)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic

    data, num_classes = prepare(cfg, data, progress)
    table = data.table.assign(idx=np.arange(len(data.table)))
    train_df, val_df = split_folds(table, cfg.fold)
    train_df = resample(train_df, cfg.class_cap, cfg.class_floor, cfg.resample_seed)

    index, labels = train_df["idx"].to_numpy(), train_df["label"].to_numpy()
    pin = device.type == "cuda"
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=pin, persistent_workers=cfg.num_workers > 0)
    if cfg.augment == "batch":
        train_set = BatchTrainSet(data.images, index, labels, num_classes, cfg.batch_size, cfg.mixup_p,
                                  cfg.mixup_alpha, cfg.seed)
        sampler = EpochSampler(len(train_set), cfg.seed, shuffle=False)  # batches are shuffled inside
        train_loader = DataLoader(train_set, batch_size=None, sampler=sampler, **loader_kw)
        n_train = min(len(index), len(train_set) * cfg.batch_size)
        augmenter = BatchAugment()
    else:
        train_ds = _EpochKeyed(data.images, index, labels, num_classes, train_transform(cfg.img_size),
                               cfg.mixup_p, cfg.mixup_alpha, cfg.seed)
        sampler = EpochSampler(len(train_ds), cfg.seed)
        # a last batch of one sample breaks BatchNorm in training mode: drop only that lone sample
        lone = len(train_ds) % cfg.batch_size == 1
        train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, drop_last=lone, **loader_kw)
        n_train = len(train_ds) - lone
        augmenter = None
    val_ds = EvalDataset(data.images, val_df["idx"].to_numpy(), val_df["label"].to_numpy(), test_transform(cfg.img_size))
    val_loader = DataLoader(val_ds, batch_size=cfg.eval_batch_size, shuffle=False, **loader_kw)

    model = build_model(cfg.model_name, num_classes, pretrained=cfg.pretrained and not resume_from,
                        pretrained_file="" if resume_from else cfg.pretrained_file,
                        drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate,
                        grad_checkpointing=cfg.grad_checkpointing,
                        init_checkpoint="" if resume_from else cfg.init_checkpoint)
    # NHWC: faster convolutions on oneDNN CPUs and what tensor cores want on a GPU (tests/bench/throughput.py
    # measures it; the README's Performance section has the figures)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    # the compiled module shares its parameters with `model`: checkpoints save and load `model` unchanged
    net = torch.compile(model) if cfg.compile else model
    criterion = loss_factory(cfg.loss, cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        cfg.lr_schedule, round(cfg.warmup_epochs * steps_per_epoch), steps_per_epoch * cfg.epochs))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    start, best_cmap, best_epoch, history = 1, -1.0, 0, []
    if resume_from:
        state = checkpoint.load(Path(resume_from) / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # saved by an fp16 run; a run in fp32 / bf16 saved none, and fp16 starts a new scale
            scaler.load_state_dict(state["scaler"])  # (a scaler that is off ignores what it is given)
        _set_rng(state["rng"])
        start, best_cmap, best_epoch = state["epoch"] + 1, state["best_cmap"], state["best_epoch"]
        history = list(state["history"])
        src_best = Path(resume_from) / "best.pt"
        if src_best.resolve() != (out / "best.pt").resolve() and src_best.is_file():
            (out / "best.pt").write_bytes(src_best.read_bytes())
        if history and history[-1].get("status") == "diverged":
            start = cfg.epochs + 1  # a diverged run stays ended

    status = "diverged" if history and history[-1].get("status") == "diverged" else "ok"
    for epoch in range(start, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        aug = None
        if augmenter is not None:
            gen = torch.Generator(device=device)
            aug = lambda x, step: augmenter(x, gen.manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + step))  # noqa: E731
        train_loss = _train_epoch(net, train_loader, criterion, optimizer, scheduler, scaler, device, dtype,
                                  cfg.grad_accum, memory_format, progress, f"epoch {epoch}/{cfg.epochs}", aug)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
                               "images_per_s": n_train / seconds}
        if not math.isfinite(train_loss):
            status = "diverged"
            row.update(status=status, val_loss=float("nan"), cmap=0.0, cmap_present=0.0, accuracy=0.0,
                       mean_recall=0.0, best_cmap=max(best_cmap, 0.0))
            history.append(row)
            _write_history(out, history)
            if report:
                report(row, None)  # no checkpoint of non-finite weights
            break
        val_loss, probs, labels = _evaluate(net, val_loader, criterion, device, dtype, memory_format)
        row.update(val_loss=val_loss, **all_metrics(probs, labels), status="ok")
        if row["cmap"] >= best_cmap:  # >= as in the notebook: later ties win
            best_cmap, best_epoch = row["cmap"], epoch
            checkpoint.save(out / "best.pt", {"model": model.state_dict(), "epoch": epoch, "metrics": dict(row),
                                              "config": cfg.to_dict(), "num_classes": num_classes})
        row["best_cmap"] = best_cmap
        history.append(row)
        checkpoint.save(out / "last.pt", {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": _get_rng(), "epoch": epoch, "best_cmap": best_cmap,
            "best_epoch": best_epoch, "history": history, "config": cfg.to_dict(), "num_classes": num_classes})
        _write_history(out, history)
        if report:
            report(dict(row), str(out))
    return {"status": status, "best_cmap": best_cmap, "best_epoch": best_epoch,
            "epochs_run": len(history), "history": history, "out_dir": str(out)}


def _train_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, dtype, grad_accum,
                 memory_format, progress, desc, augment=None) -> float:
    model.train()
    n = len(loader)
    total = torch.zeros((), device=device)
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=desc, leave=False, disable=None)  # terminals only
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(it):
        x = x.to(device, non_blocking=True)
        if augment is not None:
            x = augment(x, i)
        x = x.contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        # the last group may be shorter: divide by its real size so every step averages its batches
        group = grad_accum if (i // grad_accum + 1) * grad_accum <= n else n - (i // grad_accum) * grad_accum
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(x), y)
        scaler.scale(loss / group).backward()  # backward and stepping stay outside autocast
        total += loss.detach().float()
        if (i + 1) % grad_accum == 0 or i + 1 == n:
            scale = scaler.get_scale() if scaler.is_enabled() else 0.0
            scaler.step(optimizer)  # skipped when the scaled gradients hold inf/NaN
            scaler.update()  # ... and then the scale shrinks
            optimizer.zero_grad(set_to_none=True)
            if not scaler.is_enabled() or scaler.get_scale() >= scale:
                scheduler.step()  # a skipped step does not advance the schedule
        if (i + 1) % CHECK_EVERY == 0 or i + 1 == n:
            mean = total.item() / (i + 1)
            if not math.isfinite(mean):
                return float("nan")
            if progress:
                it.set_postfix(loss=f"{mean:.4f}")
    return total.item() / max(1, n)


@torch.no_grad()
def _evaluate(model, loader, criterion, device, dtype, memory_format):
    model.eval()
    losses, probs, labels = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        losses.append(criterion(logits.float(), y) * len(y))
        probs.append(logits.float().softmax(-1))
        labels.append(y)
    probs_np = torch.cat(probs).cpu().numpy()
    labels_np = torch.cat(labels).cpu().numpy()
    return float(torch.stack(losses).sum().item() / len(labels_np)), probs_np, labels_np


def _get_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    pd.DataFrame(history).to_csv(out / "metrics.csv", index=False)
