"""The plan of a search (search.spec.Plan) from its command line: every input checked, the search's defaults
resolved, its data made ready, nothing written and no Ray started; for --resume, the search from its
search.yaml, with any flag that would change it refused."""
from __future__ import annotations

import argparse
import dataclasses
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import spaces
from core.config import TrainConfig, parse_set
from core.errors import DataError
from search import cluster, dataset, layout, storage
from search.cli import SPEC_FLAGS, UsageError
from search.spec import Plan, RunOptions, SearchSpec
from search.spec import read as read_spec

if TYPE_CHECKING:  # core.data imports torch: loaded where the data is read, after the cheap checks
    from core.data import DecodedData


def make(args: argparse.Namespace) -> Plan:
    """Every input checked (nothing written, no Ray): the plan of a new search, or of --resume."""
    _check_numbers(args)
    cluster.check_dashboard_host(args.no_dashboard, args.address, args.dashboard_host)
    storage_path = storage.normalize(args.storage_path)
    if args.resume:
        return _resume(args, storage_path)
    cpus, gpus = _resources(args)
    if not args.address:  # a local cluster: what this machine has (a joined one is checked on connecting)
        cluster.check_resources(cpus, gpus, os.cpu_count() or 1, cluster.local_gpus())
    else:
        cluster.probe_address(args.address)
    space, sets = _space(args)
    options = _new_experiment(args, storage_path, args.name or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}")
    epochs, grace = _epochs(args, space)
    seed = 0 if args.seed is None else args.seed
    cfg = _train_config(args, space, sets, epochs=epochs, seed=seed, gpus=gpus)
    from core.data import dataset_labels, read_table

    if args.csv:
        read_table(cfg.csv, cfg.num_classes)  # the CSV's own problems first (seconds, no decoding)
    dataset.check_model(cfg)
    data = dataset.load(cfg)
    classes, spectrogram = dataset_labels(data.table, cfg.num_classes or data.num_classes, cfg.csv)
    spec = SearchSpec(
        space=space.name, max_t=epochs, grace_period=grace, reduction_factor=space.reduction_factor,
        num_samples=args.num_samples or (None if args.time_budget or args.epoch_budget else space.num_samples),
        epoch_budget=args.epoch_budget, time_budget=_time_budget(args.time_budget),
        searched=space.searched(), points=[dict(p) for p in space.points], seed=seed, cpus_per_trial=cpus,
        gpus_per_trial=gpus, searcher=args.searcher or layout.DEFAULT_SEARCHER,
        scheduler=args.scheduler or layout.DEFAULT_SCHEDULER, tail_fill=args.tail_fill or "auto",
        revalidate_top=args.revalidate_top or 0,
        revalidate_folds=_revalidation_folds(args, data, cfg.fold), study=options.study,
        journal=options.journal if storage.is_uri(storage_path) else None, base=cfg.to_dict(), classes=classes,
        spectrogram=spectrogram, created=datetime.now().isoformat(timespec="seconds"))
    return Plan(spec, options, space, data)


def _space(args: argparse.Namespace) -> tuple[spaces.Space, dict[str, Any]]:
    """The space (its demo variant without --csv) and the --set values, checked against each other."""
    space = spaces.get(args.space or "finetune")
    if not args.csv:
        space = space.on_demo()
    sets = parse_set(args.set or [])
    TrainConfig.from_dict(sets)  # a bad value is reported as such before anything else
    clash = sorted(set(sets) & set(space.searched()))
    if clash:
        raise UsageError(f"--set {clash[0]} fixes a value the '{space.name}' space searches; drop it or use another space")
    if args.csv and space.init_from_demo_base and not sets.get("init_checkpoint"):
        raise UsageError(f"the '{space.name}' space fine-tunes a bird-pretrained checkpoint and none is set for "
                         "your data: pass --set init_checkpoint=<checkpoint.pt>, or search from ImageNet or random "
                         "weights with --space scratch")
    return space, sets


def _new_experiment(args: argparse.Namespace, storage_path: str, name: str) -> RunOptions:
    """This run's options for a new experiment `name`: its storage can be written, it is not there yet, and no
    study or journal is left from an earlier search of that name (URI storage keeps them on this machine)."""
    study = _study_path(storage_path, name) if (args.searcher or layout.DEFAULT_SEARCHER) != "random" else None
    local_journal = str(Path("results", name, layout.RESULTS_LOG).resolve()) if storage.is_uri(storage_path) else None
    options = _options(args, storage_path, name)
    options = dataclasses.replace(options, study=study, journal=local_journal or storage.join(options.exp, layout.RESULTS_LOG))
    problem = storage.check_writable(storage_path)
    if problem:
        raise UsageError(f"--storage-path {args.storage_path} cannot be used: {problem}"
                         + ("" if storage.is_uri(storage_path) else "; pick another folder"))
    if storage.exists(options.exp):
        raise UsageError(f"experiment '{name}' already exists in {storage_path}; pass --resume to continue it or another --name")
    for left in (study, local_journal):
        if storage.is_uri(storage_path) and left and os.path.exists(left):
            what = "Optuna study" if left == study else "search journal"
            raise UsageError(f"the {what} {left} is left from an earlier search named '{name}' whose results are "
                             f"not in {storage.display(storage_path)}; a new search would continue it: remove it or "
                             "pick another --name")
    return options


def _epochs(args: argparse.Namespace, space: spaces.Space) -> tuple[int, int]:
    """(epochs per trial, ASHA's grace period), checked against each other and against --epoch-budget."""
    epochs = args.epochs or space.epochs
    if args.grace_period is not None and args.grace_period > epochs:
        raise UsageError(f"--grace-period {args.grace_period} is longer than the {epochs} epochs of a trial"
                         + ("" if args.epochs else f" (the '{space.name}' space's; --epochs sets them)"))
    grace = args.grace_period or layout.grace_period(space.grace_period, epochs)
    if args.epoch_budget is not None and args.epoch_budget < grace:
        raise UsageError(f"--epoch-budget {args.epoch_budget} is less than one trial's first {grace} epoch(s) before ASHA "
                         "may judge it (the grace period): give more")
    return epochs, grace


def _train_config(args: argparse.Namespace, space: spaces.Space, sets: dict[str, Any], *, epochs: int, seed: int,
                  gpus: float) -> TrainConfig:
    """The TrainConfig every trial starts from: the demo's or the CSV's, the space's base, --set, then the
    trial length, seed and device; every warm-start point checked against it."""
    base: dict[str, Any] = {}
    if not args.csv:
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
    for point in space.points:
        TrainConfig.from_dict({**base, **point})  # a warm-start value out of range fails here, not in trial 1
    return TrainConfig.from_dict(base)


def _resume(args: argparse.Namespace, storage_path: str) -> Plan:
    """The plan of --resume: the search from search.yaml alone; a flag that would change it is refused."""
    if not args.name:
        raise UsageError("--resume needs --name of the experiment to continue")
    options = _options(args, storage_path, args.name)
    problem = storage.check_writable(storage_path)
    if problem:
        raise UsageError(f"--storage-path {args.storage_path} cannot be used: {problem}")
    spec = read_spec(options.exp)
    if spec is None:
        raise UsageError(f"no birdtune experiment '{args.name}' in {storage_path} to resume")
    if args.concurrency is not None:  # Ray restores the Tuner's own settings: it would be ignored
        raise UsageError("--concurrency cannot change on --resume: Ray restores the search with the settings it "
                         "started with; drop it")
    for given, recorded in _conflicts(args, spec):
        raise UsageError(f"{given} conflicts with experiment '{args.name}' ({_show(recorded)}): "
                         "--resume continues the search its search.yaml describes; drop the flag")
    if not args.address:
        cluster.check_resources(spec.cpus_per_trial, spec.gpus_per_trial, os.cpu_count() or 1, cluster.local_gpus())
    else:
        cluster.probe_address(args.address)
    cfg = TrainConfig.from_dict(spec.base)
    journal = spec.journal or (str(Path("results", options.name, layout.RESULTS_LOG).resolve())
                               if storage.is_uri(options.exp) else None)  # (experiments from before search.yaml said)
    options = dataclasses.replace(options, study=_local_copy(spec.study, layout.DB_FILE, "Optuna study", options),
                                  journal=_local_copy(journal, layout.RESULTS_LOG, "search journal", options)
                                  or storage.join(options.exp, layout.RESULTS_LOG))
    return Plan(spec, options, spaces.get(spec.space), dataset.load(cfg))


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
                "scheduler": spec.scheduler, "tail_fill": spec.tail_fill,
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
    return default_cpus(gpus, os.cpu_count() or 1, cluster.local_gpus()), gpus


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
    if args.tail_fill == "on" and not args.resume:
        why = ("--scheduler none stops no trial" if args.scheduler == "none" else
               "a compute budget ends the search where it is spent" if args.time_budget or args.epoch_budget else "")
        if why:
            raise UsageError(f"--tail-fill on continues trials ASHA stopped in a search of --num-samples trials; {why}")


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


