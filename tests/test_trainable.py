"""search.trainable: a trial's share of a GPU, and the image cache copied to a node that lacks it (through a real
Ray task; the searches run train_trial itself)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import load_data
from helpers import image_csv


@pytest.fixture
def csv(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDTUNE_CACHE", str(tmp_path / "usercache"))
    return image_csv(tmp_path / "data")


def test_a_trial_on_a_fractional_gpu_limits_its_memory_to_its_share(monkeypatch):
    from search import trainable

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    assert trainable.limit_gpu_share(0.25) and calls == [(0.25, 0)]
    assert not trainable.limit_gpu_share(1.0) and not trainable.limit_gpu_share(0.0) and len(calls) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not trainable.limit_gpu_share(0.5) and len(calls) == 1


def test_a_trial_on_a_node_without_the_cache_copies_it_from_the_drivers_node_through_ray(csv, tmp_path):
    import copy

    import ray

    from search.trainable import copy_images

    data = load_data(csv, 16)
    lost = copy.copy(data)  # as a trial on a node with neither the file nor the images would have it
    lost.images, lost.where, lost.missing = None, str(tmp_path / "node2"), "no cache there"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        copy_images(lost, ray.get_runtime_context().get_node_id())
    finally:
        ray.shutdown()
    assert lost.how == "copied" and lost.missing == "" and Path(lost.cache.path).parent == tmp_path / "node2"
    np.testing.assert_array_equal(lost.images, data.images)
    assert json.loads(Path(lost.cache.path).with_suffix(".json").read_text())["copied_from"] == data.cache.host
