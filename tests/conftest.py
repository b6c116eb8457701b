"""Shared fixtures: a per-session demo cache and tiny configs."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The demo cache lives in a fresh folder per test session unless the caller chose one; removed at the end.
_OWN_CACHE = None
if "BIRDTUNE_CACHE" not in os.environ:
    _OWN_CACHE = os.environ["BIRDTUNE_CACHE"] = tempfile.mkdtemp(prefix="birdtune-test-cache-")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_root() -> Path:
    from core import demo

    return demo.ensure_demo("tiny")


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    """A TrainConfig on the tiny demo data that trains in seconds."""
    from core import demo
    from core.config import TrainConfig

    return TrainConfig(**{**demo.demo_overrides("tiny"), "epochs": 2, "batch_size": 16, "lr": 3e-3,
                          "out_dir": str(tmp_path / "run")})
