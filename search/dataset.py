"""The data a search trains on, made ready in the driver before Ray starts: the model checked (it builds and its
weights can be had), every image decoded once into the node's image cache (or found there whole), and the
start-up line that says how big the images are, where they live and what getting them ready cost."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from core.config import TrainConfig
from core.errors import ModelError

if TYPE_CHECKING:  # core.data imports torch: loaded once the cheap checks are done
    from core.data import DecodedData


def check_model(cfg: TrainConfig) -> None:
    """The model builds and its weights can be had, before any trial tries (offline, timm would retry the
    download in every trial for minutes and each would error)."""
    from core.model import build_model, pretrained_problem

    if cfg.init_checkpoint or cfg.pretrained_file or not cfg.pretrained:  # weights from disk or none: build it
        build_model(cfg.model_name, max(2, cfg.num_classes or 2), pretrained=cfg.pretrained,
                    pretrained_file=cfg.pretrained_file, init_checkpoint=cfg.init_checkpoint)
        return
    import timm

    if not timm.is_model(cfg.model_name):
        raise ModelError(f"unknown timm model '{cfg.model_name}'")
    problem = pretrained_problem(cfg.model_name)
    if problem:
        raise ModelError(f"pretrained=true needs timm's ImageNet weights for '{cfg.model_name}', but {problem}; "
                         "pass --set pretrained_file=/path/to/weights.safetensors (a local copy), or "
                         "--set pretrained=false to start from random weights")


def load(cfg: TrainConfig) -> DecodedData:
    """Every image decoded once into the node's image cache (or found there whole), with a line saying
    how big the images are, where they live and what getting them ready cost."""
    from core.data import load_data

    data = load_data(cfg.csv, cfg.img_size, cfg.num_classes, progress=True, memory_limit_gb=cfg.memory_limit_gb,
                     image_cache=cfg.image_cache, fold=cfg.fold)
    print(describe(data, cfg.memory_limit_gb), flush=True)
    return data


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def describe(data: DecodedData, memory_limit_gb: float) -> str:
    """The start-up line on the images: how many, their decoded size, where they live, what it cost."""
    n, size, s = f"{len(data.table)} images ({data.num_classes} classes)", _size(data.data_bytes), data.seconds
    note = f"; {data.note}" if data.note else ""
    if data.how in ("built", "reused"):
        done = (f"reused the image cache {data.cache.path} (checked in {s:.1f} s, nothing decoded)"
                if data.how == "reused" else f"decoded in {s:.1f} s into the image cache {data.cache.path}")
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        fits = ("" if data.data_bytes < 0.8 * ram else
                f"; larger than most of this machine's {_size(ram)} of memory: batches read from disk as needed")
        return (f"birdtune: {n}, {size} decoded: {done}, mapped read-only by every trial "
                f"(one copy per node in the page cache, kept for the next search){fits}{note}")
    if data.how == "lazy":
        return (f"birdtune: {n} would take {size} decoded, above memory_limit_gb={memory_limit_gb:g}, and no image "
                f"cache is used ({data.note}): every trial reads them from the image files per batch (slower)")
    return (f"birdtune: {n} decoded into memory, {size} in {s:.1f} s, copied to every node through Ray's object "
            f"store (no image cache: {data.note})")
