"""The Ray Tune function trainable: a trial's config -> TrainConfig -> core.engine.fit, reported per epoch."""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

from core import imagecache
from core.config import TrainConfig
from core.data import DecodedData
from core.engine import Report, fit
from core.losses import build_loss


@dataclass(frozen=True)
class TrialHooks:
    """What a caller may change in every trial without editing the trainable (tests/faults.py injects
    crashes and divergence this way): the loss factory core.engine.fit uses, and a wrapper of the
    per-epoch report. Each receives the trial's config first. Must pickle (Ray ships it to the workers)."""

    loss_factory: Callable[[dict[str, Any], str, float], torch.nn.Module] | None = None
    wrap_report: Callable[[dict[str, Any], Report], Report] | None = None


def _read_part(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(length)


def copy_images(data: DecodedData, node: str) -> None:
    """Copy the image cache from `node` (Ray tasks pinned there read it in blocks) into this node's first
    usable cache folder, checked against its checksum, and map it; on failure `data.missing` says why."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ref = data.cache
    reader = ray.remote(num_cpus=0)(_read_part).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    record = {"csv": data.csv, "img_size": data.img_size, "images": ref.shape[0], "copied_from": ref.host}
    errors = []
    for folder in imagecache.folders(data.csv, data.where):
        try:
            got = imagecache.copy_from(lambda off, n: ray.get(reader.remote(ref.path, off, n)), ref, folder, record)
        except OSError as e:
            errors.append(str(e))
            continue
        data.cache, data.images, data.how, data.missing = got, imagecache.open_images(got), "copied", ""
        print(f"birdtune: copied the image cache ({ref.nbytes / 1e6:.1f} MB) from {ref.host} to {got.path}", flush=True)
        return
    data.missing += f"; copying it from {ref.host} failed: {'; '.join(errors)}"


def limit_gpu_share(gpus: float) -> bool:
    """A trial packed onto a fractional GPU keeps to its share of the GPU's memory, so one trial's peak
    cannot take its neighbours' memory (Ray shares the device, not its memory). True if a limit was set."""
    if not 0 < gpus < 1 or not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(gpus, 0)  # Ray made the trial's GPU device 0
    return True


def train_trial(config: dict[str, Any], *, data: DecodedData, base: dict[str, Any], cpus: float,
                hooks: TrialHooks | None = None, data_node: str = "", gpus: float = 0.0) -> None:
    """Train one trial. `data` arrives through the object store (tune.with_parameters) as its table and
    its image cache's identity; the images are this node's cache file, mapped (copied from `data_node`,
    the driver's node, where this node has neither the cache nor the image files). `base` is the search's
    resolved TrainConfig, onto which the trial's searched values go."""
    import ray  # here, not above: TrialHooks is imported by search.run, which loads no Ray
    from ray import tune

    if data.images is None and data.cache is not None and data_node:
        copy_images(data, data_node)

    if "revalidate" in config:  # a re-validation run: a chosen trial's values, on another validation fold
        item = config["revalidate"]
        config = {**item["params"], "fold": int(item["fold"])}
    threads = max(1, int(cpus))
    limit_gpu_share(gpus)
    torch.set_num_threads(threads)  # one trial must not take the cores of its neighbours
    work = tempfile.mkdtemp(prefix="birdtune-trial-")
    try:
        cfg = TrainConfig.from_dict({**base, **config, "out_dir": os.path.join(work, "run"),
                                     "num_workers": min(base.get("num_workers", 0), max(0, threads - 1))})
        resume_from = None
        ckpt = tune.get_checkpoint()
        if ckpt is not None:  # restarted (after a failure or a driver restart): continue exactly
            resume_from = ckpt.to_directory(os.path.join(work, "resume"))

        node = ray.get_runtime_context().get_node_id()  # which node ran it (trials.csv does not show it)
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")  # which GPU(s) Ray gave it ('' for none)

        def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
            metrics = {**metrics, "node_id": node, "cuda_visible_devices": devices}
            if checkpoint_dir is None:
                tune.report(metrics)
            else:
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

        loss_factory = build_loss
        if hooks and hooks.wrap_report:
            report = hooks.wrap_report(config, report)
        if hooks and hooks.loss_factory:
            custom = hooks.loss_factory
            loss_factory = lambda name, smoothing: custom(config, name, smoothing)  # noqa: E731
        fit(cfg, report, data=data, resume_from=resume_from, progress=False, loss_factory=loss_factory)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if torch.cuda.is_available():  # a reused worker must not keep this trial's GPU memory from its neighbours
            gc.collect()
            torch.cuda.empty_cache()
