"""TrainConfig: every knob of one training run, its defaults (the notebook's CFG) and its YAML form."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError


class ConfigError(UserError):
    """A configuration a user wrote is wrong; the message is one line naming the key and the fix."""


# Allowed values for the string-valued choices; checked in TrainConfig.validate().
CHOICES = {
    "lr_schedule": ("none", "cosine"),
    "loss": ("ce", "soft_ce", "focal_cosine", "bi_tempered"),
    "amp": ("auto", "fp16", "bf16", "off"),
    "device": ("auto", "cpu", "cuda"),
    "augment": ("batch", "albumentations"),
}


@dataclass
class TrainConfig:
    # --- data -----------------------------------------------------------------------------
    csv: str = ""  # notebook-format CSV (image_path,label,label_name,group,fold); "" = built-in demo data
    fold: int = 0  # validation fold; every other fold trains
    num_classes: int = 0  # 0 = infer as max(label) + 1 from the CSV
    class_cap: int = 500  # classes with >= cap rows are sampled down to cap (0 = no cap)
    class_floor: int = 50  # classes with < floor rows are sampled up to floor with replacement (0 = none)
    resample_seed: int = 1  # random_state of the per-class sampling; 1 is the notebook's
    # --- model ----------------------------------------------------------------------------
    model_name: str = "tf_efficientnet_b0.ns_jft_in1k"  # any timm model name
    pretrained: bool = True  # timm ImageNet weights (downloads from the hub unless pretrained_file)
    pretrained_file: str = ""  # local timm weights file used instead of the hub
    init_checkpoint: str = ""  # our own checkpoint to start from; head replaced if class count differs
    img_size: int = 128  # SmallestMaxSize target: the shorter image side in pixels
    drop_rate: float = 0.3  # dropout before the classifier (notebook: drop_out)
    drop_path_rate: float = 0.2  # stochastic depth (notebook: drop_path)
    grad_checkpointing: bool = False  # trade compute for memory on large models
    # --- optimisation ---------------------------------------------------------------------
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 32  # the notebook validates with batches of 32
    grad_accum: int = 1  # optimizer step every grad_accum batches (the last partial group steps too)
    lr: float = 3e-4  # AdamW learning rate (the notebook fine-tunes with 3e-5)
    weight_decay: float = 3e-4
    lr_schedule: str = "none"  # 'none' | 'cosine' (per step, after a linear warmup)
    warmup_epochs: float = 0.0  # linear warmup length in epochs, may be fractional
    loss: str = "ce"  # 'ce' | 'soft_ce' | 'focal_cosine' | 'bi_tempered'; all accept mixup targets
    label_smoothing: float = 0.25
    mixup_p: float = 1.0  # probability that a training sample is mixed with one of another class
    mixup_alpha: float = 0.2  # mixup weight ~ Beta(alpha, alpha)
    augment: str = "batch"  # 'batch': the pipeline on whole batches on the device; 'albumentations': per sample
    # --- runtime --------------------------------------------------------------------------
    device: str = "auto"  # 'auto' (cuda if available) | 'cpu' | 'cuda'
    amp: str = "auto"  # 'auto' (fp16 on CUDA, fp32 on CPU) | 'fp16' | 'bf16' | 'off'
    deterministic: bool = False  # deterministic cuDNN kernels (no cudnn.benchmark)
    num_workers: int = 0  # DataLoader worker processes
    image_cache: str = "auto"  # decoded images kept in a file: 'auto' (beside the CSV, else ~/.cache/birdtune) | a folder | 'off'
    memory_limit_gb: float = 16.0  # without an image cache: images above this size are read from disk per batch (0 = no limit)
    channels_last: bool = True  # NHWC activations and weights: faster convolutions on GPUs and oneDNN CPUs
    compile: bool = False  # torch.compile the model (CUDA: faster steps after a compile of a minute or so)
    seed: int = 123  # the notebook's seed_everything(123)
    out_dir: str = "results/train"  # where config.yaml, metrics.csv, best.pt and last.pt go

    # ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys and wrong types fail with the key's name."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping of key: value, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in d.items():
            if key not in known:
                raise ConfigError(f"unknown config key '{key}'; valid keys: {', '.join(known)}")
            values[key] = _coerce(key, value, known[key].type)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with `changes` applied, type-checked and validated like from_dict."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def read(path: str | Path) -> dict[str, Any]:
        """The mapping a YAML config file holds (unchecked); a local path or a URI (s3://...)."""
        from core import files

        try:
            raw = files.read_bytes(path)
        except OSError as e:  # a URI whose storage refuses or does not answer
            raise ConfigError(f"cannot read config file {path}: {str(e).splitlines()[0]}") from None
        if raw is None:
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(raw.decode())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        return data or {}

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(cls.read(path))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> None:
        """Range checks, one line each, naming the key."""
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}='{getattr(self, key)}' is not one of {', '.join(allowed)}")
        positive = ("lr", "img_size", "batch_size", "eval_batch_size", "grad_accum", "epochs")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        for key in ("drop_rate", "drop_path_rate", "label_smoothing"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not 0.0 <= self.mixup_p <= 1.0:
            raise ConfigError(f"mixup_p must be in [0, 1], got {self.mixup_p}")
        for key in ("weight_decay", "warmup_epochs", "num_classes", "num_workers", "class_cap", "class_floor"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.mixup_alpha <= 0:
            raise ConfigError(f"mixup_alpha must be > 0, got {self.mixup_alpha}")
        if self.class_cap and self.class_floor and self.class_cap < self.class_floor:
            raise ConfigError(
                f"class_cap ({self.class_cap}) must be >= class_floor ({self.class_floor}); "
                "set class_cap=0 for no cap"
            )
        if self.num_classes == 1:
            raise ConfigError("num_classes must be 0 (infer) or >= 2")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _coerce(key: str, value: Any, type_name: str) -> Any:
    """Check one value against its field type. Ints widen to float; numeric strings such as
    YAML's '3e-4' (which PyYAML reads as a string) parse as floats; nothing else converts."""
    want = _TYPES[type_name]
    if want is float:
        if isinstance(value, bool):
            pass
        elif isinstance(value, (int, float)):
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{key} must be a number, got nan")
            return value
        elif isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is bool:
        if isinstance(value, bool):
            return value
    elif want is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    raise ConfigError(f"{key} must be {type_name}, got {type(value).__name__} {value!r}")


def parse_pairs(items: list[str], flag: str = "--set") -> list[tuple[str, str]]:
    """Command-line `key=value` items as (key, raw value) pairs; one line naming the item otherwise."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        out.append((key.strip(), raw.strip()))
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse command-line `key=value` overrides, typing each value by its TrainConfig field."""
    known = {f.name: f.type for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for key, raw in parse_pairs(items):
        if key not in known:
            raise ConfigError(f"unknown config key '{key}' in --set; valid keys: {', '.join(known)}")
        out[key] = _parse_text(key, raw, known[key])
    return out


def _parse_text(key: str, raw: str, type_name: str) -> Any:
    if type_name == "str":
        return raw
    if type_name == "bool":
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got '{raw}'")
    try:
        num = float(raw) if type_name == "float" else int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be {type_name}, got '{raw}'") from None
    return num
