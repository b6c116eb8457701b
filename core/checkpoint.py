"""Our checkpoint files: plain tensors and numbers saved with torch.save, loaded with weights_only=True."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError  # (defined where nothing heavy is imported)

FORMAT = "birdtune-checkpoint"
VERSION = 1


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load one of our checkpoints, or a bare state dict of tensors, never arbitrary pickles."""
    from core import files

    if files.is_uri(path):  # s3://... (the search's own best/model.pt, say): read through pyarrow
        try:
            source = files.open_bytes(path)
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
        if source is None:
            raise CheckpointError(f"checkpoint not found: {path}")
    else:
        path = source = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "can still be loaded" not in str(e) and "Unsupported global" not in str(e):
            raise CheckpointError(f"{path} is not a readable checkpoint: {str(e).splitlines()[0]}") from None
        raise CheckpointError(
            f"{path} is not a birdtune checkpoint: it holds pickled Python objects (a whole model saved "
            "with torch.save(model)?), which are not loaded for safety; if you trust it, convert it with "
            "torch.save(torch.load(p, weights_only=False).state_dict(), 'weights.pt')"
        ) from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(e).splitlines()[0]}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version", 0) > VERSION:
            raise CheckpointError(f"{path} was written by a newer birdtune (format version {obj['version']})")
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": FORMAT, "version": VERSION, "model": obj}  # a plain state_dict
    raise CheckpointError(f"{path} is not a birdtune checkpoint or a state dict of tensors")
