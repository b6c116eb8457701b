"""build_model: a timm classifier behind a grayscale uint8 input stem; init from our checkpoints."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from core import checkpoint
from core.errors import ModelError  # (defined where nothing heavy is imported)


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
    instead of the hub; `init_checkpoint` loads our own checkpoint instead (every weight comes from it,
    so pretrained weights are not fetched), replacing the classifier when its class count differs."""
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown timm model '{model_name}'{hint}")
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if init_checkpoint:
        pretrained, pretrained_file = False, ""
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


def pretrained_problem(model_name: str, timeout: float = 5.0) -> str | None:
    """None if timm can get `model_name`'s pretrained weights (in the local Hugging Face cache, or the hub
    answers within `timeout` seconds), else why not, in a few words."""
    import os
    import urllib.error
    import urllib.request

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return f"timm lists no pretrained weights for '{model_name}'"
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        cache = os.environ.get("HF_HUB_CACHE") or None  # None: huggingface_hub's default (HF_HOME/hub)
        for name in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else []) + ["model.safetensors", "pytorch_model.bin"]:
            if isinstance(try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision or None), str):
                return None
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return "HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache"
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        url = f"{endpoint}/api/models/{repo}"
    else:
        from urllib.parse import urlparse

        if (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file():
            return None
        url = cfg.url
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError as e:  # the server answered: the download itself will say more
        if e.code >= 500:
            return f"{url} answered HTTP {e.code}"
    except Exception as e:  # DNS, refused, timeout, proxy
        reason = getattr(e, "reason", e)
        host = url.split("/api/")[0]
        if isinstance(reason, TimeoutError):
            return f"they are not in the local cache and {host} did not answer within {timeout:g} s"
        return f"they are not in the local cache and {host} cannot be reached ({getattr(reason, 'strerror', None) or reason})"
    return None


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
