"""Configs drawn near a known one: the space's base config (the notebook's values, a prior a user already
trusts) or the search's best so far. birdtune's multi-fidelity TPE (search.searcher.MultiFidelityTPE) mixes
them with its random and model-based proposals, as PriorBand (Mallik et al., 2023) mixes prior, incumbent
and random samples.

Through an Optuna sampler, so a define-by-run space (conditional parameters included) is sampled as the
study samples it: a numeric parameter from a normal around the center's value on the parameter's own scale
(log for log parameters), its standard deviation `width` x the range, redrawn until inside the bounds and
rounded to the step; a categorical one keeps the center's choice with probability `keep`, else is drawn
uniformly; a parameter the center does not have (a conditional one it never reached) uniformly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class AroundSampler(optuna.samplers.BaseSampler):
    def __init__(self, center: dict[str, Any], width: float, seed: int | None = None, keep: float = 0.5):
        if not 0 < width:
            raise ValueError(f"width must be > 0, got {width}")
        self.center, self.width, self.keep = dict(center), float(width), float(keep)
        self._rng = np.random.default_rng(seed)
        self._uniform = optuna.samplers.RandomSampler(seed=int(self._rng.integers(2**31)))

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(self, study, trial, name: str, distribution: BaseDistribution) -> Any:
        if name not in self.center or not _inside(distribution, self.center[name]):
            return self._uniform.sample_independent(study, trial, name, distribution)
        value = self.center[name]
        if isinstance(distribution, CategoricalDistribution):
            if self._rng.random() < self.keep:
                return value
            return distribution.choices[int(self._rng.integers(len(distribution.choices)))]
        if isinstance(distribution, (FloatDistribution, IntDistribution)):
            return near(value, distribution, self.width, self._rng)
        return self._uniform.sample_independent(study, trial, name, distribution)


def _inside(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in distribution.choices)
    try:
        return distribution.low <= float(value) <= distribution.high
    except (TypeError, ValueError, AttributeError):  # not a number, or a distribution of another kind
        return False


def near(value: float, d: FloatDistribution | IntDistribution, width: float, rng: np.random.Generator) -> float | int:
    """A draw from a normal around `value` on the distribution's scale, inside its bounds, on its step."""
    f = math.log if d.log else float
    lo, hi, x = f(d.low), f(d.high), f(value)
    if hi <= lo:
        return value
    for _ in range(100):
        y = rng.normal(x, width * (hi - lo))
        if lo <= y <= hi:
            break
    else:  # (a center at a bound with a tiny width)
        y = min(max(y, lo), hi)
    out = math.exp(y) if d.log else y
    step = d.step
    if step:
        out = d.low + round((out - d.low) / step) * step
    if isinstance(d, IntDistribution):
        out = int(round(out))
    return min(max(out, d.low), d.high)
