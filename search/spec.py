"""What a search is and how this run of it goes: SearchSpec (what search.yaml holds, with its one reader and
writer), RunOptions and the Plan that search.plan builds from the command line."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

import spaces
from search import layout, storage

if TYPE_CHECKING:  # core.data imports torch
    from core.data import DecodedData


@dataclass(frozen=True)
class SearchSpec:
    """The search itself, as search.yaml records it: export, the report and --resume read only this."""

    space: str
    max_t: int  # epochs per trial = ASHA's max_t
    grace_period: int
    reduction_factor: int
    num_samples: int | None  # None: as many as the budget allows
    searched: list[str]
    points: list[dict[str, Any]]  # warm-start trials
    seed: int
    cpus_per_trial: int
    gpus_per_trial: float
    searcher: str
    scheduler: str
    revalidate_top: int
    revalidate_folds: list[int]
    study: str | None  # the Optuna study's SQLite file (tpe)
    base: dict[str, Any]  # the resolved TrainConfig every trial starts from
    classes: list[str] = field(default_factory=list)  # class names in label order
    spectrogram: dict[str, Any] | None = None  # core.prepare's settings of the data, if it made them
    metric: str = spaces.METRIC
    mode: str = spaces.MODE
    time_attr: str = spaces.TIME_ATTR
    created: str = ""
    journal: str | None = None  # with URI storage, the journal's local file (search.journal); else in the experiment
    epoch_budget: int | None = None  # trial-epochs the search may spend (--epoch-budget)
    time_budget: float | None = None  # seconds of search time it may spend (--time-budget)
    tail_fill: str = "auto"  # --tail-fill (search.scheduler.TailFill)

    ORDER = ("space", "metric", "mode", "time_attr", "max_t", "grace_period", "reduction_factor", "num_samples",
             "epoch_budget", "time_budget", "searched", "points", "seed", "cpus_per_trial", "gpus_per_trial", "searcher",
             "scheduler", "tail_fill", "revalidate_top", "revalidate_folds", "study", "journal", "base", "classes", "spectrogram",
             "created")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.ORDER}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d.setdefault("searcher", "tpe")  # experiments written before these were recorded (tpe was the default)
        d.setdefault("scheduler", "asha")
        d.setdefault("revalidate_top", 0)
        d.setdefault("revalidate_folds", [])
        d.setdefault("study", None)
        return cls(**d)

    @property
    def budget(self):
        """The search's compute budget (search.budget.Budget; false when it has none)."""
        from search.budget import Budget

        return Budget(epochs=self.epoch_budget, seconds=self.time_budget)

    @property
    def first_trial_number(self) -> int:
        """Ray's trial counter starts at 1 under a Searcher (Optuna) and at 0 under its random search."""
        return 0 if self.searcher == "random" else 1

    @property
    def rungs(self) -> list[int]:
        """The epochs at which ASHA judges a trial (layout.asha_rungs without max_t); none without ASHA."""
        if self.scheduler != "asha":
            return []
        return layout.asha_rungs(self.max_t, self.grace_period, self.reduction_factor)[:-1]


@dataclass(frozen=True)
class RunOptions:
    """How this invocation runs the search: where, on which cluster, what it shows."""

    name: str
    storage_path: str  # absolute local path or URI
    storage_arg: str  # as the user wrote it, for the commands printed
    address: str | None
    resume: bool
    max_failures: int
    concurrency: int | None
    dashboard: bool
    dashboard_host: str
    verbose: bool
    study: str | None = None  # the Optuna study file this run uses (with URI storage, a local copy)
    journal: str = ""  # the journal file this run appends to (search.journal; with URI storage, a local file)
    log_to: tuple = ()  # search.tracking.Target: trackers every trial is logged to (--log-to)

    @property
    def exp(self) -> str:
        """The experiment's folder or URI."""
        return storage.join(self.storage_path, self.name)

    @property
    def resume_command(self) -> str:
        """The command that continues this search, as the user would type it."""
        extra = (f" --storage-path {storage.shell(self.storage_arg)}"
                 if self.storage_arg != layout.DEFAULT_STORAGE else "")
        return f"python -m search.run --name {self.name} --resume{extra}"


@dataclass(frozen=True)
class Plan:
    """A search ready to run: what it is, how this run goes, its space and its decoded data."""

    spec: SearchSpec
    options: RunOptions
    space: spaces.Space
    data: DecodedData


def read(exp: str) -> SearchSpec | None:
    """The experiment's search.yaml (folder or URI); None when it has none."""
    text = storage.read_text(storage.join(exp, layout.META_FILE))
    return None if text is None else SearchSpec.from_dict(yaml.safe_load(text))


def write(plan: Plan) -> None:
    """search.yaml, once, when the search is new: --resume reads the search from it alone."""
    meta = storage.join(plan.options.exp, layout.META_FILE)
    if not plan.options.resume and not storage.exists(meta):
        storage.write_text(meta, plan.spec.to_yaml())
