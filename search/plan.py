"""What a search is (SearchSpec: what search.yaml holds) and how this run of it goes (RunOptions), built from
the command line with every input check done before Ray starts."""
from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import spaces
from core.config import TrainConfig, parse_set
from core.errors import DataError, ModelError, UserError
from search import layout, storage
from search.cli import SPEC_FLAGS

if TYPE_CHECKING:  # core.data imports torch: loaded where the data is read, after the cheap checks
    from core.data import DecodedData


class UsageError(UserError):
    """A bad command line; reported as one line with exit code 2 before Ray starts."""


LOOPBACK = ("127.0.0.1", "localhost", "::1")


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

    ORDER = ("space", "metric", "mode", "time_attr", "max_t", "grace_period", "reduction_factor", "num_samples",
             "epoch_budget", "time_budget", "searched", "points", "seed", "cpus_per_trial", "gpus_per_trial", "searcher",
             "scheduler", "revalidate_top", "revalidate_folds", "study", "journal", "base", "classes", "spectrogram",
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


@dataclass(frozen=True)
class Plan:
    spec: SearchSpec
    options: RunOptions
    space: spaces.Space
    data: DecodedData


def make(args: argparse.Namespace) -> Plan:
    """Every input checked (nothing written, no Ray): the plan of a new search, or of --resume."""
    _check_numbers(args)
    _check_dashboard_host(args)
    storage_path = storage.normalize(args.storage_path)
    if args.resume:
        return _resume(args, storage_path)
    cpus, gpus = _resources(args)
    if not args.address:  # a local cluster: what this machine has (a joined one is checked on connecting)
        check_resources(cpus, gpus, os.cpu_count() or 1, _local_gpus())
    if args.address:
        _probe_address(args.address)
    space = spaces.get(args.space or "finetune")
    on_demo = not args.csv
    if on_demo:
        space = space.on_demo()
    sets = parse_set(args.set or [])
    TrainConfig.from_dict(sets)  # a bad value is reported as such before anything else
    searched = space.searched()
    clash = sorted(set(sets) & set(searched))
    if clash:
        raise UsageError(f"--set {clash[0]} fixes a value the '{space.name}' space searches; drop it or use another space")
    if not on_demo and space.init_from_demo_base and not sets.get("init_checkpoint"):
        raise UsageError(f"the '{space.name}' space fine-tunes a bird-pretrained checkpoint and none is set for "
                         "your data: pass --set init_checkpoint=<checkpoint.pt>, or search from ImageNet or random "
                         "weights with --space scratch")
    name = args.name or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"
    searcher = args.searcher or layout.DEFAULT_SEARCHER
    study = _study_path(storage_path, name) if searcher != "random" else None  # an Optuna study: not random
    local_journal = str(Path("results", name, layout.RESULTS_LOG).resolve()) if storage.is_uri(storage_path) else None
    options = _options(args, storage_path, name)
    options = dataclasses.replace(options, study=study, journal=local_journal or storage.join(options.exp, layout.RESULTS_LOG))
    problem = storage.check_writable(storage_path)
    if problem:
        raise UsageError(f"--storage-path {args.storage_path} cannot be used: {problem}"
                         + ("" if storage.is_uri(storage_path) else "; pick another folder"))
    if storage.exists(options.exp):
        raise UsageError(f"experiment '{name}' already exists in {storage_path}; pass --resume to continue it or another --name")
    for left in (study, local_journal):  # URI storage keeps these here: ones left by a search not in the bucket
        if storage.is_uri(storage_path) and left and os.path.exists(left):
            what = "Optuna study" if left == study else "search journal"
            raise UsageError(f"the {what} {left} is left from an earlier search named '{name}' whose results are "
                             f"not in {storage.display(storage_path)}; a new search would continue it: remove it or "
                             "pick another --name")
    epochs = args.epochs or space.epochs
    if args.grace_period is not None and args.grace_period > epochs:
        raise UsageError(f"--grace-period {args.grace_period} is longer than the {epochs} epochs of a trial"
                         + ("" if args.epochs else f" (the '{space.name}' space's; --epochs sets them)"))
    grace = args.grace_period or layout.grace_period(space.grace_period, epochs)
    if args.epoch_budget is not None and args.epoch_budget < grace:
        raise UsageError(f"--epoch-budget {args.epoch_budget} is less than one trial's first {grace} epoch(s) before ASHA "
                         "may judge it (the grace period): give more")
    seed = 0 if args.seed is None else args.seed
    base: dict[str, Any] = {}
    if on_demo:
        from core import demo

        base.update(demo.demo_overrides(space.demo_size))
        if space.init_from_demo_base:
            base["init_checkpoint"] = str(demo.ensure_base_checkpoint(space.demo_size, verbose=True))
    else:
        if not Path(args.csv).is_file():
            raise DataError(f"CSV not found: {args.csv}")
        base["csv"] = str(Path(args.csv).resolve())
    base.update(space.base)
    base.update(sets)
    base.update(epochs=epochs, seed=seed)
    # trials train where their resources are; --set device=cpu with GPUs declared is the user's choice
    base["device"] = sets.get("device") or ("cuda" if gpus > 0 else "cpu")
    if base["device"] == "cuda" and gpus == 0:
        raise UsageError("--set device=cuda needs GPUs for the trials: add --gpus-per-trial (e.g. 1 or 0.25)")
    for k in ("init_checkpoint", "pretrained_file"):
        if base.get(k) and not storage.is_uri(base[k]):  # a URI is read as it is, on every node
            base[k] = str(Path(base[k]).resolve())
    cfg = TrainConfig.from_dict(base)
    for point in space.points:
        TrainConfig.from_dict({**base, **point})  # a warm-start value out of range fails here, not in trial 1
    from core.data import class_names, dataset_info, read_table

    if not on_demo:
        read_table(cfg.csv, cfg.num_classes)  # the CSV's own problems first (seconds, no decoding)
    check_model(cfg)
    data = load(cfg)
    spec = SearchSpec(
        space=space.name, max_t=epochs, grace_period=grace,
        reduction_factor=space.reduction_factor,
        num_samples=args.num_samples or (None if args.time_budget or args.epoch_budget else space.num_samples),
        epoch_budget=args.epoch_budget, time_budget=_time_budget(args.time_budget),
        searched=searched, points=[dict(p) for p in space.points], seed=seed, cpus_per_trial=cpus,
        gpus_per_trial=gpus, searcher=searcher, scheduler=args.scheduler or layout.DEFAULT_SCHEDULER,
        revalidate_top=args.revalidate_top or 0, revalidate_folds=_revalidation_folds(args, data, cfg.fold),
        study=study, journal=local_journal, base=cfg.to_dict(),
        classes=class_names(data.table, cfg.num_classes or data.num_classes, cfg.csv),
        spectrogram=dataset_info(cfg.csv)[1], created=datetime.now().isoformat(timespec="seconds"))
    return Plan(spec, options, space, data)


def _resume(args: argparse.Namespace, storage_path: str) -> Plan:
    """The plan of --resume: the search from search.yaml alone; a flag that would change it is refused."""
    if not args.name:
        raise UsageError("--resume needs --name of the experiment to continue")
    options = _options(args, storage_path, args.name)
    problem = storage.check_writable(storage_path)
    if problem:
        raise UsageError(f"--storage-path {args.storage_path} cannot be used: {problem}")
    text = storage.read_text(storage.join(options.exp, layout.META_FILE))
    if text is None:
        raise UsageError(f"no birdtune experiment '{args.name}' in {storage_path} to resume")
    spec = SearchSpec.from_dict(yaml.safe_load(text))
    if args.concurrency is not None:  # Ray restores the Tuner's own settings: it would be ignored
        raise UsageError("--concurrency cannot change on --resume: Ray restores the search with the settings it "
                         "started with; drop it")
    for given, recorded in _conflicts(args, spec):
        raise UsageError(f"{given} conflicts with experiment '{args.name}' ({_show(recorded)}): "
                         "--resume continues the search its search.yaml describes; drop the flag")
    if not args.address:
        check_resources(spec.cpus_per_trial, spec.gpus_per_trial, os.cpu_count() or 1, _local_gpus())
    else:
        _probe_address(args.address)
    cfg = TrainConfig.from_dict(spec.base)
    journal = spec.journal or (str(Path("results", options.name, layout.RESULTS_LOG).resolve())
                               if storage.is_uri(options.exp) else None)  # (experiments from before search.yaml said)
    options = dataclasses.replace(options, study=_local_copy(spec.study, layout.DB_FILE, "Optuna study", options),
                                  journal=_local_copy(journal, layout.RESULTS_LOG, "search journal", options)
                                  or storage.join(options.exp, layout.RESULTS_LOG))
    return Plan(spec, options, spaces.get(spec.space), load(cfg))


def _local_copy(path: str | None, name: str, what: str, options: RunOptions) -> str | None:
    """The local file to continue (the study; the journal of a URI experiment). With URI storage they live
    on the machine that started the search (SQLite needs a local file; the journal is appended to), and
    copies go to the bucket: resumed where the file is missing (another machine), the copy is fetched into
    ./results/<name>/."""
    if not path or os.path.isfile(path) or not storage.is_uri(options.exp):
        return path
    local = Path("results", options.name, name).resolve()
    copy = storage.read_bytes(storage.join(options.exp, name))
    if copy is None:
        return str(local) if name == layout.RESULTS_LOG else path
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(copy)
    print(f"birdtune: the {what} {path} is not on this machine: continuing the copy from "
          f"{storage.display(options.exp)} in {local}", flush=True)
    return str(local)


def _conflicts(args: argparse.Namespace, spec: SearchSpec) -> list[tuple[str, Any]]:
    """(the flag as given, the value search.yaml records) for each search-describing flag on this
    command line that differs from the experiment's."""
    recorded = {"space": spec.space, "csv": spec.base.get("csv"), "num_samples": spec.num_samples,
                "epochs": spec.max_t, "grace_period": spec.grace_period, "seed": spec.seed, "searcher": spec.searcher,
                "scheduler": spec.scheduler,
                "revalidate_top": spec.revalidate_top, "folds": spec.revalidate_folds,
                "cpus_per_trial": spec.cpus_per_trial, "gpus_per_trial": spec.gpus_per_trial,
                "time_budget": spec.time_budget, "epoch_budget": spec.epoch_budget}
    out = []
    for flag in SPEC_FLAGS:
        value = getattr(args, flag)
        if value is None:
            continue
        if flag == "set":
            out += [(f"--set {key}={_show(v)}", spec.base.get(key)) for key, v in parse_set(value).items()
                    if spec.base.get(key) != v]
            continue
        if flag == "folds":
            value = _parse_folds(value)
        elif flag == "time_budget":
            value = _time_budget(value)
        elif flag == "csv":
            value = str(Path(value).resolve())
        if value != recorded[flag]:
            out.append((f"--{flag.replace('_', '-')} {_show(value)}", recorded[flag]))
    return out


def _time_budget(text: str | None) -> float | None:
    from search.budget import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else f"{v:g}" if isinstance(v, float) else str(v)


def _options(args: argparse.Namespace, storage_path: str, name: str) -> RunOptions:
    from search import tracking

    try:
        log_to = tuple(tracking.parse(args.log_to))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return RunOptions(log_to=log_to, name=name, storage_path=storage_path, storage_arg=args.storage_path, address=args.address,
                      resume=args.resume, max_failures=args.max_failures,
                      concurrency=args.concurrency, dashboard=not args.no_dashboard,
                      dashboard_host=args.dashboard_host, verbose=args.verbose)


# --- the checks ---------------------------------------------------------------------------------
def _resources(args: argparse.Namespace) -> tuple[int, float]:
    """(CPUs, GPUs) per trial. Without --cpus-per-trial: 1 on CPUs; with GPUs, this machine's CPUs divided
    among the trials its GPUs hold at once (4 CPUs each for 0.25 GPU on a 16-core one-GPU machine), so a GPU
    trial gets DataLoader workers."""
    gpus = 0.0 if args.gpus_per_trial is None else args.gpus_per_trial
    if args.cpus_per_trial is not None:
        return int(args.cpus_per_trial), gpus
    return default_cpus(gpus, os.cpu_count() or 1, _local_gpus()), gpus


def default_cpus(gpus_per_trial: float, cpus: int, gpus: int) -> int:
    if gpus_per_trial <= 0 or gpus <= 0:
        return 1
    slots = max(1, int(gpus / gpus_per_trial + 1e-9))
    return max(1, cpus // slots)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.cpus_per_trial is not None and (args.cpus_per_trial < 1 or not float(args.cpus_per_trial).is_integer()):
        raise UsageError(f"--cpus-per-trial must be a whole number >= 1, got {args.cpus_per_trial}")
    if args.gpus_per_trial is not None and (args.gpus_per_trial < 0 or (
            args.gpus_per_trial > 1 and not float(args.gpus_per_trial).is_integer())):
        raise UsageError(f"--gpus-per-trial must be >= 0 (a fraction up to 1 or a whole number), got {args.gpus_per_trial}")
    for flag in ("num_samples", "epochs", "concurrency", "grace_period", "epoch_budget"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.max_failures < 0:
        raise UsageError("--max-failures must be >= 0")
    _time_budget(args.time_budget)
    if args.revalidate_top is not None and args.revalidate_top < 0:
        raise UsageError("--revalidate-top must be >= 0")
    if args.folds and not args.revalidate_top and not args.resume:
        raise UsageError("--folds only applies with --revalidate-top K")


def check_resources(cpus: float, gpus: float, have_cpus: float, have_gpus: float) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it now."""
    if cpus > have_cpus:
        raise UsageError(f"--cpus-per-trial {cpus:g} but the cluster has {have_cpus:g} CPUs")
    if gpus > 0 and have_gpus == 0:
        raise UsageError("--gpus-per-trial is set but no GPU is visible (torch.cuda.device_count() == 0); "
                         "use --gpus-per-trial 0 to train on CPUs")
    if gpus > have_gpus:
        raise UsageError(f"--gpus-per-trial {gpus:g} but the cluster has {have_gpus:g} GPUs")


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_dashboard_host(args: argparse.Namespace) -> None:
    """Anyone who reaches the dashboard's API can run code on the cluster: loopback by default,
    a warning for any other address, and a refusal when token authentication is off."""
    if args.no_dashboard or args.address or args.dashboard_host in LOOPBACK:
        return
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise UsageError(f"--dashboard-host {args.dashboard_host} with RAY_AUTH_MODE=disabled would let anyone who "
                         "reaches it run code on this machine; keep 127.0.0.1 or turn token authentication on")
    print(f"warning: the Ray dashboard will listen on {args.dashboard_host}: anyone who reaches it and holds the "
          "token (`ray get-auth-token`) can submit jobs that run code on this cluster", file=sys.stderr)


def _probe_address(address: str) -> None:
    if address == "auto":
        return  # ray.init finds (or fails to find) the local cluster without waiting
    if address.startswith("ray://"):
        raise UsageError(f"--address {address}: Ray Client is not supported (Ray documents that it may not work "
                         "with Ray Tune, and a search's driver keeps its image cache and Optuna study on its own "
                         "machine); submit the search as a Ray job (`ray job submit --address http://HEAD:8265 "
                         "--working-dir . -- python -m search.run --address auto ...`) or run it on a cluster "
                         "machine with --address HEAD:6379")
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address must be auto or host:port, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise UsageError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with `ray start --head`") from None


def _study_path(storage_path: str, name: str) -> str:
    """The Optuna study's SQLite file: in the experiment folder, or under ./results for a URI storage path
    (SQLite needs a local file; export copies it beside the trials)."""
    if storage.is_uri(storage_path):
        return str(Path("results", name, layout.DB_FILE).resolve())
    return os.path.join(storage_path, name, layout.DB_FILE)


def _parse_folds(text: str) -> list[int]:
    try:
        folds = [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise UsageError(f"--folds must be comma-separated fold numbers, got '{text}'") from None
    return sorted(set(folds))


def _revalidation_folds(args: argparse.Namespace, data: DecodedData, search_fold: int) -> list[int]:
    if not args.revalidate_top:
        return []
    have = sorted(int(f) for f in data.table["fold"].unique())
    if args.folds:
        folds = _parse_folds(args.folds)
        if not folds or any(f not in have for f in folds):
            raise UsageError(f"--folds {args.folds}: the data's folds are {have}")
        return folds
    others = have[have.index(search_fold) + 1:] + have[:have.index(search_fold)]
    if not others:
        raise UsageError(f"--revalidate-top needs a fold besides the search's fold {search_fold}; the data has {have}")
    return others[:2]


def check_model(cfg: TrainConfig) -> None:
    """The model builds and its weights can be had, before any trial tries (offline, timm would retry the
    download in every trial for minutes and each would error)."""
    from core.model import build_model, pretrained_problem

    if cfg.init_checkpoint or cfg.pretrained_file or not cfg.pretrained:  # weights from disk or none: build it
        build_model(cfg.model_name, max(2, cfg.num_classes or 2), pretrained=cfg.pretrained,
                    pretrained_file=cfg.pretrained_file, init_checkpoint=cfg.init_checkpoint)
        return
    import timm

    if not timm.is_model(cfg.model_name):
        raise ModelError(f"unknown timm model '{cfg.model_name}'")
    problem = pretrained_problem(cfg.model_name)
    if problem:
        raise ModelError(f"pretrained=true needs timm's ImageNet weights for '{cfg.model_name}', but {problem}; "
                         "pass --set pretrained_file=/path/to/weights.safetensors (a local copy), or "
                         "--set pretrained=false to start from random weights")


def load(cfg: TrainConfig) -> DecodedData:
    """Every image decoded once into the node's image cache (or found there whole), with a line saying
    how big the images are, where they live and what getting them ready cost."""
    from core.data import load_data

    data = load_data(cfg.csv, cfg.img_size, cfg.num_classes, progress=True, memory_limit_gb=cfg.memory_limit_gb,
                     image_cache=cfg.image_cache, fold=cfg.fold)
    print(describe(data, cfg.memory_limit_gb))
    return data


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def describe(data: DecodedData, memory_limit_gb: float) -> str:
    """The start-up line on the images: how many, their decoded size, where they live, what it cost."""
    n, size, s = f"{len(data.table)} images ({data.num_classes} classes)", _size(data.data_bytes), data.seconds
    note = f"; {data.note}" if data.note else ""
    if data.how in ("built", "reused"):
        done = (f"reused the image cache {data.cache.path} (checked in {s:.1f} s, nothing decoded)"
                if data.how == "reused" else f"decoded in {s:.1f} s into the image cache {data.cache.path}")
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        fits = ("" if data.data_bytes < 0.8 * ram else
                f"; larger than most of this machine's {_size(ram)} of memory: batches read from disk as needed")
        return (f"birdtune: {n}, {size} decoded: {done}, mapped read-only by every trial "
                f"(one copy per node in the page cache, kept for the next search){fits}{note}")
    if data.how == "lazy":
        return (f"birdtune: {n} would take {size} decoded, above memory_limit_gb={memory_limit_gb:g}, and no image "
                f"cache is used ({data.note}): every trial reads them from the image files per batch (slower)")
    return (f"birdtune: {n} decoded into memory, {size} in {s:.1f} s, copied to every node through Ray's object "
            f"store (no image cache: {data.note})")
