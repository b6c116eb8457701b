"""The model folder a search exports (best/) and core.predict reads: config.yaml, model.pt, classes.txt,
spectrogram.yaml. Self-contained: predicting needs neither the training CSV nor its images."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core import checkpoint
from core.audio import Spectrogram
from core.config import ConfigError, TrainConfig
from core.errors import UserError

CONFIG = "config.yaml"  # the complete TrainConfig (model name, image size, ...)
MODEL = "model.pt"  # best-epoch weights (a core.train folder has best.pt instead, also accepted)
CLASSES = "classes.txt"  # class names in label order, one per line: the submission's columns
SPECTROGRAM = "spectrogram.yaml"  # core.prepare's settings the model was trained on


class BundleError(UserError):
    """A model folder that cannot be used; one line naming the missing or broken file."""


def extras(classes: list[str], spectrogram: dict[str, Any] | None) -> dict[str, bytes]:
    """classes.txt and (for data made by core.prepare) spectrogram.yaml, as file name -> bytes."""
    files = {CLASSES: "".join(f"{c}\n" for c in classes).encode()}
    if spectrogram:
        files[SPECTROGRAM] = yaml.safe_dump(Spectrogram.from_dict(spectrogram).to_dict(), sort_keys=False).encode()
    return files


def write_extras(folder: str | Path, classes: list[str], spectrogram: dict[str, Any] | None) -> None:
    for name, data in extras(classes, spectrogram).items():
        (Path(folder) / name).write_bytes(data)


@dataclass
class Bundle:
    folder: Path
    config: TrainConfig
    weights: dict[str, Any]  # the model's state dict
    classes: list[str]
    spectrogram: Spectrogram


def load(folder: str | Path) -> Bundle:
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"model folder not found: {folder} (pass results/<name>/best)")
    missing = [name for name in (CONFIG, CLASSES, SPECTROGRAM) if not (folder / name).is_file()]
    weights = next((folder / n for n in (MODEL, "best.pt") if (folder / n).is_file()), None)
    if weights is None:
        missing.insert(1, MODEL)
    if missing:
        why = (f"; {SPECTROGRAM} exists only for models trained on data made by core.prepare"
               if SPECTROGRAM in missing else "; rewrite it with python -m search.export results/<name>")
        raise BundleError(f"model folder {folder} lacks {', '.join(missing)}{why}")
    try:
        cfg = TrainConfig.load(folder / CONFIG)
        spec = Spectrogram.from_dict(yaml.safe_load((folder / SPECTROGRAM).read_text()) or {})
    except (ConfigError, ValueError, yaml.YAMLError) as e:
        raise BundleError(f"model folder {folder}: {str(e).splitlines()[0]}") from None
    try:
        state = checkpoint.load(weights)
    except checkpoint.CheckpointError as e:
        raise BundleError(str(e)) from None
    classes = [ln for ln in (folder / CLASSES).read_text().splitlines() if ln.strip()]
    head = [v for k, v in state["model"].items() if k.endswith(".weight") and v.ndim == 2]
    outputs = state.get("num_classes") or (head[-1].shape[0] if head else len(classes))
    if outputs != len(classes):
        raise BundleError(f"{folder / CLASSES} names {len(classes)} classes but {weights.name} has {outputs} outputs")
    return Bundle(folder, cfg, state["model"], classes, spec)
