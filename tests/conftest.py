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


@pytest.fixture(scope="session")
def tiny_data(tiny_root):
    """The tiny demo's images, decoded once per test process."""
    from core import demo
    from core.data import load_data

    ov = demo.demo_overrides("tiny")
    return load_data(ov["csv"], ov["img_size"])


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    """A TrainConfig on the tiny demo data that trains in seconds."""
    from core import demo
    from core.config import TrainConfig

    return TrainConfig(**{**demo.demo_overrides("tiny"), "epochs": 2, "batch_size": 16, "lr": 3e-3,
                          "out_dir": str(tmp_path / "run")})


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A finished smoke search with re-validation of its top 2 on folds 1 and 2: (experiment folder, the
    finished process's returncode/stdout/stderr). Run once per test session: the test processes of
    pytest-xdist share it (the first builds it under a lock, the others read it). Tests read it; one that
    changes an experiment works on a copy."""
    import json
    from types import SimpleNamespace

    from filelock import FileLock

    import helpers

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    store, record = root / "finished-search", root / "finished-search.json"
    with FileLock(str(root / "finished-search.lock")):
        if not record.is_file():
            r = helpers.search("--storage-path", str(store), "--name", "e2e", "--seed", "0", "--revalidate-top", "2",
                               "--folds", "1,2")
            record.write_text(json.dumps(dict(returncode=r.returncode, stdout=r.stdout, stderr=r.stderr)))
    r = SimpleNamespace(**json.loads(record.read_text()))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return store / "e2e", r
