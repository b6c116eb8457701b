"""The Ray Tune function trainable: a trial's config -> TrainConfig -> core.engine.fit, reported per epoch."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import torch
from ray import tune

from core.config import TrainConfig
from core.data import DecodedData
from core.engine import fit


def train_trial(config: dict[str, Any], *, data: DecodedData, base: dict[str, Any], cpus: float) -> None:
    """Train one trial. `data` arrives once per node through the object store (tune.with_parameters);
    `base` is the search's resolved TrainConfig, onto which the trial's searched values go."""
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)  # one trial must not take the cores of its neighbours
    work = tempfile.mkdtemp(prefix="birdtune-trial-")
    try:
        cfg = TrainConfig.from_dict({**base, **config, "out_dir": os.path.join(work, "run"),
                                     "num_workers": min(base.get("num_workers", 0), max(0, threads - 1))})
        resume_from = None
        ckpt = tune.get_checkpoint()
        if ckpt is not None:  # restarted (after a failure or a driver restart): continue exactly
            resume_from = ckpt.to_directory(os.path.join(work, "resume"))

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            if checkpoint_dir is None:
                tune.report(metrics)
            else:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        fit(cfg, report, data=data, resume_from=resume_from, progress=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
