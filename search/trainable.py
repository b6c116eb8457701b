"""The Ray Tune function trainable: a trial's config -> TrainConfig -> core.engine.fit, reported per epoch."""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from typing import Any

import torch
from ray import tune

from core import engine
from core.config import TrainConfig
from core.data import DecodedData
from core.engine import fit

# Test-only fault injection (tests/test_faults.py), never a user-facing flag:
#   BIRDTUNE_TEST_FAULT="<crash|oom|diverge>@<key>=<value>[;after=<epoch>][;times=<n>]"
# faults the trials whose config has key == value: crash/oom raise after reporting any epoch >= `after`
# (at most `times` times, counted in files under BIRDTUNE_TEST_FAULT_DIR); diverge makes the loss NaN.
FAULT_ENV, FAULT_DIR_ENV = "BIRDTUNE_TEST_FAULT", "BIRDTUNE_TEST_FAULT_DIR"


def train_trial(config: dict[str, Any], *, data: DecodedData, base: dict[str, Any], cpus: float) -> None:
    """Train one trial. `data` arrives once per node through the object store (tune.with_parameters);
    `base` is the search's resolved TrainConfig, onto which the trial's searched values go."""
    if "revalidate" in config:  # a re-validation run: a chosen trial's values, on another validation fold
        item = config["revalidate"]
        config = {**item["params"], "fold": int(item["fold"])}
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

        build_loss = engine.build_loss
        try:
            fit(cfg, _inject_faults(config, report), data=data, resume_from=resume_from, progress=False)
        finally:
            engine.build_loss = build_loss  # the patch must not outlive the trial if its worker is reused
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if torch.cuda.is_available():  # a reused worker must not keep this trial's GPU memory from its neighbours
            gc.collect()
            torch.cuda.empty_cache()


def _inject_faults(config: dict[str, Any], report):
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return report
    kind, _, rest = spec.partition("@")
    target, *opts = rest.split(";")
    key, _, value = target.partition("=")
    if key not in config or abs(float(config[key]) - float(value)) > 1e-12:
        return report
    opt = dict(o.split("=") for o in opts)
    after, times = int(opt.get("after", 1)), int(opt.get("times", 1))
    if kind == "diverge":
        real = engine.build_loss
        engine.build_loss = lambda name, smoothing: (lambda logits, y: real(name, smoothing)(logits, y) * float("nan"))
        return report
    counter = os.path.join(os.environ.get(FAULT_DIR_ENV, tempfile.gettempdir()), f"fault-{key}-{value}")

    def faulty(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        report(metrics, checkpoint_dir)
        done = os.path.getsize(counter) if os.path.exists(counter) else 0
        if metrics["epoch"] >= after and done < times:
            with open(counter, "a") as fh:
                fh.write("x")
            if kind == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by BIRDTUNE_TEST_FAULT)")
            raise RuntimeError(f"injected crash after epoch {after} (BIRDTUNE_TEST_FAULT)")

    return faulty
