"""What every search space gives, and the metric constants shared with the trainable and scheduler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

METRIC = "cmap"  # reported by core.engine.fit every epoch
MODE = "max"
TIME_ATTR = "epoch"  # ASHA's time axis: the epoch number fit reports


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    define: Callable[[Any], dict | None]  # Optuna define-by-run: trial.suggest_* calls only, no computation
    base: dict[str, Any]  # TrainConfig overrides applied under every trial's values
    epochs: int  # = ASHA max_t
    grace_period: int  # epochs every trial gets before ASHA may stop it
    reduction_factor: int
    num_samples: int  # default number of trials
    points: list[dict[str, Any]] = field(default_factory=list)  # warm-start trials, run first, in order
    demo_size: str = "default"  # demo data set used when no --csv is given
    demo: dict[str, Any] = field(default_factory=dict)  # overrides of epochs/num_samples/... on the demo data
    init_from_demo_base: bool = False  # on the demo data, start from its base checkpoint
    reference: str = "first trial"  # what the report calls points[0] when comparing the best config with it

    def on_demo(self) -> "Space":
        """This space with its demo-sized settings."""
        from dataclasses import replace

        return replace(self, **self.demo) if self.demo else self

    def searched(self) -> list[str]:
        """Names of the parameters `define` suggests, found by running it on a recording trial."""
        return list(self.distributions())

    def distributions(self) -> dict[str, dict[str, Any]]:
        """Each searched parameter's distribution as plain data, in suggestion order:
        {"kind": "float"|"int"|"categorical", "low", "high", "step", "log", "choices"}; bounds inclusive,
        as Optuna's. The one description that Optuna, Ray's random search and the report all read."""
        rec = _Recorder()
        self.define(rec)
        return rec.specs


class _Recorder:
    """A stand-in Optuna trial that records each suggestion's distribution and returns its low bound."""

    def __init__(self):
        self.specs: dict[str, dict[str, Any]] = {}

    def _rec(self, name, value, **spec):
        self.specs[name] = spec
        return value

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._rec(name, low, kind="float", low=low, high=high, step=step, log=log)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._rec(name, low, kind="int", low=low, high=high, step=step, log=log)

    def suggest_categorical(self, name, choices):
        return self._rec(name, choices[0], kind="categorical", choices=list(choices))
