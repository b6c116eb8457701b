"""What every peer adapter shares (run in the peer tool's own venv: numpy and the benchmark's readers only): the
replay's benchmark, and a simulated cluster of W workers on its curves with the equal-compute cost model.

The cost model is the one most favourable to the peers: a job evaluates a config up to an epoch (its
fidelity); a config continued to a higher fidelity is charged only its new epochs and their time, as if
resumed from a checkpoint (as birdtune's trials are), and a fidelity it already reached costs nothing. A job
that would take the epochs charged, plus those the running jobs will take, past the budget is not started
(counted as `refused`); any overshoot is reported.

The value a tool is told is the config's metric at that epoch (higher is better; tools that minimise get its
negative). A run's pick is the tool's own incumbent, scored at full length as the replay scores birdtune's.
"""
from __future__ import annotations

import heapq
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/bench: benchmarks, lcbench, tables
sys.path.insert(0, str(HERE.parents[2]))  # the repository: spaces (plain Python)

import numpy as np  # noqa: E402

import benchmarks  # noqa: E402


def key(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(float(v), 12) if isinstance(v, (int, float, np.floating, np.integer)) else v)
                        for k, v in config.items()))


def plain(config: dict[str, Any]) -> dict[str, Any]:
    """A config with numpy scalars as Python values (for JSON and the benchmark)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}


class Cluster:
    """W simulated workers running a tool's jobs (config, fidelity) on the benchmark's curves, within a budget
    of trial-epochs, on a clock of the curves' seconds."""

    def __init__(self, bench, task: str, seed: int, workers: int, budget: int):
        self.bench, self.task, self.seed, self.workers, self.budget = bench, str(task), seed, workers, budget
        self.space = bench.space()
        self.max_t = self.space.epochs
        self.best_q, self.median_q = benchmarks.reference(bench, self.task)
        self._hits: dict = {}
        self._curves: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.reached: dict[tuple, int] = {}  # epochs each config has been trained (its checkpoint)
        self.used = 0  # epochs charged for jobs that ended
        self.committed = 0  # epochs the running jobs will be charged
        self.now = 0.0
        self.refused = 0
        self.configs: set[tuple] = set()
        self._running: list = []
        self._order = 0
        self.best = (-math.inf, None)  # best value told so far, its config's full-length quality
        self.anytime: list[tuple[int, float]] = []
        self.t0 = time.time()

    # --- the benchmark -------------------------------------------------------------------------
    def curve(self, config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        k = key(config)
        if k not in self._curves:
            metric, seconds = benchmarks.curves(self.bench, self.task, [plain(config)], self.seed, self._hits)
            self._curves[k] = (metric[0], seconds[0])
        return self._curves[k]

    def quality(self, config: dict[str, Any]) -> float:
        if hasattr(self.bench, "quality"):
            return float(self.bench.quality(self.task, plain(config)))
        return float(self.curve(config)[0].max())

    def regret(self, quality: float) -> float:
        return (self.best_q - quality) / max(self.best_q - self.median_q, 1e-12)

    # --- jobs --------------------------------------------------------------------------------------
    def free(self) -> int:
        return self.workers - len(self._running)

    def cost(self, config: dict[str, Any], fidelity: int) -> int:
        return max(0, int(fidelity) - self.reached.get(key(config), 0))

    def fits(self, config: dict[str, Any], fidelity: int) -> bool:
        return self.used + self.committed + self.cost(config, fidelity) <= self.budget

    def start(self, job: Any, config: dict[str, Any], fidelity: int) -> bool:
        """Start a job, or refuse it (False) when it would take the budget past its end."""
        fidelity = max(1, min(int(round(fidelity)), self.max_t))
        if not self.fits(config, fidelity):
            self.refused += 1
            return False
        k = key(config)
        first = self.reached.get(k, 0)
        cost = max(0, fidelity - first)
        seconds = float(self.curve(config)[1][first:fidelity].sum())
        self.reached[k] = max(first, fidelity)
        self.configs.add(k)
        self.committed += cost
        heapq.heappush(self._running, (self.now + seconds, self._order, job, config, fidelity, cost))
        self._order += 1
        return True

    def running(self) -> int:
        return len(self._running)

    def next(self) -> tuple[Any, dict[str, Any], int, float]:
        """The next job to end: (job, config, fidelity, its metric at that epoch); the clock moves to it."""
        done, _, job, config, fidelity, cost = heapq.heappop(self._running)
        self.now = max(self.now, done)
        self.committed -= cost
        self.used += cost
        value = float(self.curve(config)[0][fidelity - 1])
        if value > self.best[0]:
            self.best = (value, self.quality(config))
        if self.best[1] is not None:
            self.anytime.append((self.used, self.regret(self.best[1])))
        return job, config, fidelity, value

    def result(self, pick: dict[str, Any] | None, **extra) -> dict[str, Any]:
        """The run's record: its pick scored at full length, the epochs it used."""
        q = self.quality(pick) if pick is not None else self.median_q
        steps = [self.anytime[i] for i in range(len(self.anytime))
                 if i == len(self.anytime) - 1 or self.anytime[i + 1][1] != self.anytime[i][1]]
        return dict(task=self.task, seed=self.seed, workers=self.workers, epochs=self.used,
                    overshoot=max(0, self.used - self.budget), refused=self.refused, trials=len(self.configs),
                    quality=q, regret=self.regret(q), pick=plain(pick) if pick is not None else None,
                    anytime=[(int(e), round(float(r), 5)) for e, r in steps], seconds=round(time.time() - self.t0, 2),
                    **extra)


def distributions(space) -> dict[str, dict[str, Any]]:
    """The space's parameters as plain data (spaces.Space.distributions), for tools with spaces of their own."""
    return space.distributions()


def configspace(space, seed: int):
    """The space as a ConfigSpace ConfigurationSpace (SMAC, DEHB), its defaults those of space.points[0]."""
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    defaults = dict(space.points[0]) if space.points else {}
    cs = ConfigurationSpace(seed=seed)
    hps = []
    for name, d in distributions(space).items():
        kw = {"default": defaults[name]} if name in defaults else {}
        if d["kind"] == "categorical":
            hps.append(Categorical(name, d["choices"], **kw))
        elif d["kind"] == "int":
            hps.append(Integer(name, (int(d["low"]), int(d["high"])), log=bool(d["log"]), **kw))
        else:
            hps.append(Float(name, (float(d["low"]), float(d["high"])), log=bool(d["log"]), **kw))
    (getattr(cs, "add", None) or cs.add_hyperparameters)(hps)
    return cs


def version(distribution: str) -> str:
    """The installed release of a peer tool."""
    from importlib.metadata import version as installed

    return installed(distribution)
