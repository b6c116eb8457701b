"""fit(cfg, report): train and validate per epoch, checkpoint, resume exactly, report metrics; the loop and its
named steps (the data, the training's parts, a resume, an epoch, its checkpoints)."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from core import checkpoint
from core.config import ConfigError, TrainConfig
from core.data import DataError, DecodedData, load_data
from core.datasets import Loaders, make_loaders
from core.losses import build_loss
from core.metrics import all_metrics
from core.model import build_model

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


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine":
            span = max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
        return 1.0

    return f


def ready_data(cfg: TrainConfig, data: DecodedData | None = None, progress: bool = False) -> tuple[DecodedData, int]:
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


@dataclass
class Training:
    """The model and everything that steps it: what a checkpoint saves and a resume loads."""

    model: torch.nn.Module  # the module checkpoints save and load
    net: torch.nn.Module  # what runs: `model`, or its torch.compile'd wrapper (same parameters)
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None  # autocast's, or None for fp32
    memory_format: torch.memory_format


@dataclass
class Progress:
    """Where a run is: the next epoch, its best so far, every epoch's row, whether it diverged."""

    start: int = 1
    best_cmap: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"


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
    device = set_up_device(cfg)
    data, num_classes = ready_data(cfg, data, progress)
    loaders = make_loaders(cfg, data, num_classes, pin_memory=device.type == "cuda")
    t = build_training(cfg, num_classes, device, len(loaders.train), loss_factory, fresh=not resume_from)
    state = resume(t, Path(resume_from), out, cfg.epochs) if resume_from else Progress()
    for epoch in range(state.start, cfg.epochs + 1):
        loaders.sampler.set_epoch(epoch)
        row = run_epoch(cfg, t, loaders, epoch, progress)
        if row["status"] == "diverged":
            state.status = "diverged"
            row["best_cmap"] = max(state.best_cmap, 0.0)
            state.history.append(row)
            _write_history(out, state.history)
            if report:
                report(row, None)  # no checkpoint of non-finite weights
            break
        save_epoch(cfg, t, state, row, out, num_classes)
        if report:
            report(dict(row), str(out))
    return {"status": state.status, "best_cmap": state.best_cmap, "best_epoch": state.best_epoch,
            "epochs_run": len(state.history), "history": state.history, "out_dir": str(out)}


def set_up_device(cfg: TrainConfig) -> torch.device:
    """The run's device, every generator seeded, cuDNN as cfg.deterministic asks."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
    return device


def build_training(cfg: TrainConfig, num_classes: int, device: torch.device, batches_per_epoch: int,
                   loss_factory: Callable[[str, float], torch.nn.Module], fresh: bool = True) -> Training:
    """The model (pretrained / initial weights only when `fresh`: a resumed run loads its own), loss, AdamW,
    the per-step LR schedule and the fp16 loss scaler."""
    model = build_model(cfg.model_name, num_classes, pretrained=cfg.pretrained and fresh,
                        pretrained_file=cfg.pretrained_file if fresh else "", drop_rate=cfg.drop_rate,
                        drop_path_rate=cfg.drop_path_rate, grad_checkpointing=cfg.grad_checkpointing,
                        init_checkpoint=cfg.init_checkpoint if fresh else "")
    # NHWC: faster convolutions on oneDNN CPUs and what tensor cores want on a GPU (tests/bench/throughput.py
    # measures it; docs/performance.md has the figures)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        cfg.lr_schedule, round(cfg.warmup_epochs * steps_per_epoch), steps_per_epoch * cfg.epochs))
    dtype = amp_dtype(cfg.amp, device)
    # the compiled module shares its parameters with `model`: checkpoints save and load `model` unchanged
    return Training(model, torch.compile(model) if cfg.compile else model, loss_factory(cfg.loss, cfg.label_smoothing),
                    optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), device,
                    dtype, memory_format)


def resume(t: Training, folder: Path, out: Path, epochs: int) -> Progress:
    """Load `folder`'s last.pt into the training (weights, optimizer, schedule, loss scale, every generator)
    and say where the run was; its best.pt is copied into `out`. A diverged run stays ended."""
    state = checkpoint.load(folder / "last.pt", map_location=t.device)
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # saved by an fp16 run; a run in fp32 / bf16 saved none, and fp16 starts a new scale
        t.scaler.load_state_dict(state["scaler"])  # (a scaler that is off ignores what it is given)
    _set_rng(state["rng"])
    src_best = folder / "best.pt"
    if src_best.resolve() != (out / "best.pt").resolve() and src_best.is_file():
        (out / "best.pt").write_bytes(src_best.read_bytes())
    history = list(state["history"])
    diverged = bool(history) and history[-1].get("status") == "diverged"
    return Progress(epochs + 1 if diverged else state["epoch"] + 1, state["best_cmap"], state["best_epoch"], history,
                    "diverged" if diverged else "ok")


def run_epoch(cfg: TrainConfig, t: Training, loaders: Loaders, epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch's training and validation, as its row of metrics (status 'diverged' when the training loss
    is not finite: then nothing is validated)."""
    t0 = time.perf_counter()
    aug = None
    if loaders.augmenter is not None:
        gen = torch.Generator(device=t.device)
        aug = lambda x, step: loaders.augmenter(x, gen.manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + step))  # noqa: E731
    train_loss = _train_epoch(t.net, loaders.train, t.criterion, t.optimizer, t.scheduler, t.scaler, t.device, t.dtype,
                              cfg.grad_accum, t.memory_format, progress, f"epoch {epoch}/{cfg.epochs}", aug)
    row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": t.optimizer.param_groups[0]["lr"],
                           "images_per_s": loaders.n_train / (time.perf_counter() - t0)}
    if not math.isfinite(train_loss):
        row.update(status="diverged", val_loss=float("nan"), cmap=0.0, cmap_present=0.0, accuracy=0.0, mean_recall=0.0)
        return row
    val_loss, probs, labels = _evaluate(t.net, loaders.val, t.criterion, t.device, t.dtype, t.memory_format)
    row.update(val_loss=val_loss, **all_metrics(probs, labels), status="ok")
    return row


def save_epoch(cfg: TrainConfig, t: Training, state: Progress, row: dict[str, Any], out: Path, num_classes: int) -> None:
    """The epoch's row into the history, best.pt when it is the best so far, last.pt and metrics.csv."""
    if row["cmap"] >= state.best_cmap:  # >= as in the notebook: later ties win
        state.best_cmap, state.best_epoch = row["cmap"], row["epoch"]
        checkpoint.save(out / "best.pt", {"model": t.model.state_dict(), "epoch": row["epoch"], "metrics": dict(row),
                                          "config": cfg.to_dict(), "num_classes": num_classes})
    row["best_cmap"] = state.best_cmap
    state.history.append(row)
    checkpoint.save(out / "last.pt", {
        "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
        "scaler": t.scaler.state_dict(), "rng": _get_rng(), "epoch": row["epoch"], "best_cmap": state.best_cmap,
        "best_epoch": state.best_epoch, "history": state.history, "config": cfg.to_dict(), "num_classes": num_classes})
    _write_history(out, state.history)


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
