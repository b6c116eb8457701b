"""LCBench (YAHPO Gym's surrogate of it) as a replay benchmark (tests/bench/benchmarks.py): learning curves of
MLPs on OpenML tasks, 52 epochs, 7 hyperparameters, read with ONNX Runtime from ../shared/benchmarks/lcbench
(see its README), or from BIRDTUNE_LCBENCH_DIR.

    Surrogate(path).curves(task, [config, ...]) -> (val_accuracy (n, 52), seconds per epoch (n, 52))

The search space and its defaults come from the folder's config_space.json; `space()` gives them as a
birdtune spaces.Space (an Optuna define-by-run function, the defaults as its first point, 52 epochs).
`LCBench()` is the surrogate as the replay's benchmark: its 34 valid tasks, 17 of them for development.
Not collected by pytest.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = Path(os.environ.get("BIRDTUNE_LCBENCH_DIR") or ROOT.parent / "shared" / "benchmarks" / "lcbench")
EPOCHS = 52
# the model's continuous inputs, in its order (after the epoch)
INPUTS = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
OUTPUTS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
           "test_balanced_accuracy")
# the README's development tasks: every choice is made on these; the other valid tasks are held out
DEV_TASKS = ("3945,34539,126025,126029,167168,167184,167185,167190,167201,168330,168335,189354,189865,189866,"
             "189873,189905,189909").split(",")


class MissingBenchmark(Exception):
    """The LCBench folder is missing or incomplete (one line for the user)."""


class Surrogate:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else DEFAULT_DIR
        need = ("model.onnx", "config_space.json", "encoding.json")
        missing = [n for n in need if not (self.path / n).is_file()]
        if missing:
            raise MissingBenchmark(f"LCBench surrogate not found: {self.path} lacks {', '.join(missing)} "
                                   f"(give --lcbench-dir, the folder with YAHPO Gym's lcbench files)")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1  # one replay process, one core
        self.session = ort.InferenceSession(str(self.path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        cs = json.loads((self.path / "config_space.json").read_text())
        self.hyper = {h["name"]: h for h in cs["hyperparameters"]}
        self.tasks = list(self.hyper["OpenML_task_id"]["choices"])
        self.codes = json.loads((self.path / "encoding.json").read_text())["OpenML_task_id"]

    def defaults(self) -> dict[str, Any]:
        out = {}
        for name in INPUTS:
            h = self.hyper[name]
            out[name] = int(h["default"]) if h["type"] == "uniform_int" else float(h["default"])
        return out

    def space(self):
        from spaces.base import Space

        return Space(name="lcbench", description="LCBench (YAHPO Gym surrogate): MLPs on OpenML tasks",
                     define=_Define(self), base={}, epochs=EPOCHS, grace_period=1, reduction_factor=4,
                     num_samples=32, points=[self.defaults()], reference="config_space.json's defaults")

    def curves(self, task: str, configs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """val_accuracy (%) and seconds of each epoch 1..52 of every config, (n, 52) each, in one call."""
        n = len(configs)
        x = np.zeros((n, EPOCHS, 8), np.float32)
        x[:, :, 0] = np.arange(1, EPOCHS + 1, dtype=np.float32)
        for j, name in enumerate(INPUTS, 1):
            x[:, :, j] = np.array([float(c[name]) for c in configs], np.float32)[:, None]
        cat = np.full((n * EPOCHS, 1), self.codes[str(task)], np.int32)
        out = self.session.run(None, {"x_cont": x.reshape(-1, 8), "x_cat": cat})[0].reshape(n, EPOCHS, len(OUTPUTS))
        acc = out[:, :, OUTPUTS.index("val_accuracy")].astype(float)
        elapsed = np.maximum.accumulate(np.maximum(out[:, :, OUTPUTS.index("time")].astype(float), 0.0), axis=1)
        seconds = np.diff(elapsed, axis=1, prepend=0.0)
        return acc, np.maximum(seconds, 1e-3)  # the clock always moves forward

class _Define:
    """The surrogate's define-by-run function: it carries the ranges only (not the ONNX session), so the
    space pickles like any other."""

    def __init__(self, surrogate: Surrogate):
        self.hyper = {n: surrogate.hyper[n] for n in INPUTS}

    def __call__(self, trial) -> None:
        for name in INPUTS:
            h = self.hyper[name]
            if h["type"] == "uniform_int":
                trial.suggest_int(name, int(h["lower"]), int(h["upper"]), log=bool(h["log"]))
            else:
                trial.suggest_float(name, float(h["lower"]), float(h["upper"]), log=bool(h["log"]))


class LCBench:
    """The surrogate as the replay's benchmark (tests/bench/benchmarks.py's protocol)."""

    name = "lcbench"
    dev_tasks = list(DEV_TASKS)

    def __init__(self, path: str | Path | None = None):
        self.surrogate = Surrogate(path)
        self.tasks = list(self.surrogate.tasks)

    def space(self):
        return self.surrogate.space()

    def curves(self, task: str, configs: list[dict[str, Any]]):
        return self.surrogate.curves(task, configs)
