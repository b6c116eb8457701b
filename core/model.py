"""build_model: a timm classifier behind a grayscale uint8 input stem; init from our checkpoints."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from core import checkpoint


class ModelError(ValueError):
    """A model that cannot be built or initialised as asked; one line naming the cause."""


class SpectrogramClassifier(nn.Module):
    """Takes (B, 1, H, W) uint8 spectrograms: scales to [0, 1] (as the notebook's img/255) and
    repeats the one channel to the three a timm backbone expects, all on the model's device."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.model = net  # attribute name matches the notebook's Customize_Model: keys 'model.*'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


def build_model(model_name: str, num_classes: int, *, pretrained: bool = False, pretrained_file: str = "",
                drop_rate: float = 0.0, drop_path_rate: float = 0.0, grad_checkpointing: bool = False,
                init_checkpoint: str = "") -> SpectrogramClassifier:
    """Create `model_name` through timm. `pretrained_file` loads timm weights from a local file
    instead of the hub; `init_checkpoint` then loads our own checkpoint over them, replacing
    the classifier when its class count differs."""
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown timm model '{model_name}'{hint}")
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise ModelError(f"pretrained_file not found: {pretrained_file}")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    else:
        kwargs.update(pretrained=pretrained)
    try:
        net = timm.create_model(model_name, **kwargs)
    except Exception as e:  # hub unreachable, bad weights file, ...
        where = pretrained_file or "the Hugging Face hub"
        raise ModelError(
            f"cannot create '{model_name}' with pretrained weights from {where}: {str(e).splitlines()[0]}; "
            "offline, set pretrained=false or pretrained_file=<local weights>"
        ) from None
    if grad_checkpointing:
        net.set_grad_checkpointing(True)
    model = SpectrogramClassifier(net)
    if init_checkpoint:
        load_weights(model, init_checkpoint)
    return model


def classifier_prefix(model: SpectrogramClassifier) -> str:
    """State-dict prefix of the classifier head ('model.classifier', 'model.head.fc', ...)."""
    name = model.model.pretrained_cfg.get("classifier", "classifier")
    if isinstance(name, (list, tuple)):
        name = name[0]
    return f"model.{name}"


def load_weights(model: SpectrogramClassifier, path: str) -> bool:
    """Load a checkpoint's weights; returns True when the head was replaced (class count differs).
    Accepts our checkpoints and plain state dicts with or without the 'model.' prefix."""
    state = checkpoint.load(path)["model"]
    if not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    own = model.state_dict()
    head = classifier_prefix(model)
    replaced = False
    head_keys = [k for k in state if k.startswith(head + ".")]
    if any(k in own and own[k].shape != state[k].shape for k in head_keys):
        for k in head_keys:
            state.pop(k)
        replaced = True
    missing = [k for k in own if k not in state and not (replaced and k.startswith(head + "."))]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} mis-shaped keys, e.g. "
                  f"{(missing + unexpected + wrong)[0]}")
        raise ModelError(f"{path} does not fit model {model.model.default_cfg.get('architecture', '?')}: {detail}")
    model.load_state_dict(state, strict=not replaced)
    return replaced
