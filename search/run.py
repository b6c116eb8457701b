"""`python -m search.run`: Ray Tune + Optuna TPE + ASHA over a search space; the best config exported."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

import spaces
from core.checkpoint import CheckpointError
from core.config import ConfigError, TrainConfig, parse_set
from core.data import DataError, DecodedData, read_table
from core.model import ModelError
from search import storage
from search.export import DB_FILE, META_FILE, export, format_table  # no Ray import before start_ray

EXAMPLES = """examples:
  python -m search.run                                  # finetune space on the built-in demo data (CPU ok)
  python -m search.run --space smoke                    # seconds: check a set-up
  python -m search.run --csv Data/train.csv --set init_checkpoint=base.pt --gpus-per-trial 0.25
  python -m search.run --space scratch --csv Data/train.csv --set model_name=tf_efficientnet_b0.ns_jft_in1k
  python -m search.run --address auto --storage-path s3://bucket/birdtune   # an existing Ray cluster
  python -m search.run --revalidate-top 3 --folds 1,2                      # pick the winner on two more folds
  python -m search.run --searcher random --scheduler none                  # the baseline to compare against
  python -m search.run --name finetune-20261125-101500 --resume            # continue after a crash
  python -m search.export results/finetune-20261125-101500                 # rewrite the outputs
"""


class UsageError(ValueError):
    """A bad command line; reported as one line with exit code 2 before Ray starts."""


USER_ERRORS = (UsageError, ConfigError, DataError, ModelError, CheckpointError, spaces.UnknownSpace)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="finetune", help=f"search space: {', '.join(spaces.SPACES)} (default finetune)")
    p.add_argument("--csv", default="", help="notebook-format CSV (default: the built-in demo data)")
    p.add_argument("--num-samples", type=int, help="number of trials (default: the space's)")
    p.add_argument("--epochs", type=int, help="epochs per trial = ASHA max_t (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="e.g. 1, 0.5 or 0.25 (packs trials on a GPU)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="whole CPUs per trial (default 1)")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as many as the resources allow)")
    p.add_argument("--name", help="experiment name (default <space>-<date>-<time>)")
    p.add_argument("--storage-path", default="./results", help="folder or URI (s3://, gs://, file://, NFS path)")
    p.add_argument("--address", help="existing Ray cluster: auto, host:port or ray://host:port")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name with Tuner.restore")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its last checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler and of every trial")
    p.add_argument("--time-budget", type=float, help="seconds; past it no trial starts and the search ends")
    p.add_argument("--no-dashboard", action="store_true", help="start the local Ray cluster without its dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard bind address (default loopback only)")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "random"],
                   help="tpe: Optuna TPE, ASHA-aware, study in <experiment>/optuna.db (default); random: Ray's random search")
    p.add_argument("--scheduler", default="asha", choices=["asha", "none"],
                   help="asha: stop weak trials early (default); none: every trial runs all epochs")
    p.add_argument("--revalidate-top", type=int, default=0, metavar="K",
                   help="after the search, retrain the K best configs at full length on --folds and pick the best mean")
    p.add_argument("--folds", default="", metavar="F1,F2,...",
                   help="validation folds for --revalidate-top (default: the two folds after the search's fold)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base TrainConfig field")
    p.add_argument("--verbose", action="store_true", help="Ray's full trial tables and logs")
    return p.parse_args(argv)


@dataclass
class Plan:
    args: argparse.Namespace
    space: spaces.Space
    base: dict[str, Any]
    searched: list[str]
    data: DecodedData
    exp: str  # experiment folder or URI
    storage_path: str
    name: str
    num_samples: int
    epochs: int
    meta: dict[str, Any]
    dashboard: str | None = None  # its URL, once Ray has started


def prepare(args: argparse.Namespace) -> Plan:
    """Everything that can be wrong with the input, checked before Ray starts."""
    if args.cpus_per_trial < 1 or not float(args.cpus_per_trial).is_integer():
        raise UsageError(f"--cpus-per-trial must be a whole number >= 1, got {args.cpus_per_trial}")
    if args.gpus_per_trial < 0 or (args.gpus_per_trial > 1 and not float(args.gpus_per_trial).is_integer()):
        raise UsageError(f"--gpus-per-trial must be >= 0 (a fraction up to 1 or a whole number), got {args.gpus_per_trial}")
    for flag in ("num_samples", "epochs", "concurrency"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.max_failures < 0:
        raise UsageError("--max-failures must be >= 0")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UsageError("--time-budget must be > 0 seconds")
    if args.revalidate_top < 0:
        raise UsageError("--revalidate-top must be >= 0")
    if args.folds and not args.revalidate_top:
        raise UsageError("--folds only applies with --revalidate-top K")
    _check_dashboard_host(args)
    if not args.address:  # a local cluster: what this machine has (a remote one is checked on connecting)
        _check_resources(args, os.cpu_count() or 1, _local_gpus())
    storage_path = storage.normalize(args.storage_path)
    if args.resume:
        if not args.name:
            raise UsageError("--resume needs --name of the experiment to continue")
        return _prepare_resume(args, storage_path)
    if args.address:
        _probe_address(args.address)
    space = spaces.get(args.space)
    on_demo = not args.csv
    if on_demo:
        space = space.on_demo()
    sets = parse_set(args.set)
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
    exp = storage.join(storage_path, name)
    problem = storage.check_writable(storage_path)
    if problem:
        raise UsageError(f"--storage-path {args.storage_path} is not writable ({problem}); pick another folder")
    if storage.exists(exp):
        raise UsageError(f"experiment '{name}' already exists in {storage_path}; pass --resume to continue it or another --name")
    epochs = args.epochs or space.epochs
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
    base.update(epochs=epochs, seed=args.seed, device="cuda" if args.gpus_per_trial > 0 else "cpu")
    for k in ("init_checkpoint", "pretrained_file"):
        if base.get(k):
            base[k] = str(Path(base[k]).resolve())
    cfg = TrainConfig.from_dict(base)
    for point in space.points:
        TrainConfig.from_dict({**base, **point})  # a warm-start value out of range fails here, not in trial 1
    if not on_demo:
        read_table(cfg.csv, cfg.num_classes)  # the CSV's own problems first (seconds, no decoding)
    _check_model(cfg)
    data = _load(cfg)
    folds = _revalidation_folds(args, data, cfg.fold)
    from core.data import class_names, dataset_info
    meta = dict(space=space.name, metric=spaces.METRIC, mode=spaces.MODE, time_attr=spaces.TIME_ATTR, max_t=epochs,
                grace_period=min(space.grace_period, epochs), reduction_factor=space.reduction_factor,
                num_samples=args.num_samples or space.num_samples, searched=searched, points=space.points,
                seed=args.seed, cpus_per_trial=int(args.cpus_per_trial), gpus_per_trial=args.gpus_per_trial,
                searcher=args.searcher, scheduler=args.scheduler, revalidate_top=args.revalidate_top,
                revalidate_folds=folds, study=_study_path(storage_path, name) if args.searcher == "tpe" else None,
                base=cfg.to_dict(), classes=class_names(data.table, cfg.num_classes or data.num_classes, cfg.csv),
                spectrogram=dataset_info(cfg.csv)[1], created=datetime.now().isoformat(timespec="seconds"))
    return Plan(args, space, cfg.to_dict(), searched, data, exp, storage_path, name, meta["num_samples"], epochs, meta)


def _study_path(storage_path: str, name: str) -> str:
    """The Optuna study's SQLite file: in the experiment folder, or under ./results for a URI storage path
    (SQLite needs a local file; export copies it beside the trials)."""
    if storage.is_uri(storage_path):
        return str(Path("results", name, DB_FILE).resolve())
    return os.path.join(storage_path, name, DB_FILE)


def _revalidation_folds(args, data: DecodedData, search_fold: int) -> list[int]:
    if not args.revalidate_top:
        return []
    have = sorted(int(f) for f in data.table["fold"].unique())
    if args.folds:
        try:
            folds = [int(f) for f in args.folds.split(",") if f.strip()]
        except ValueError:
            raise UsageError(f"--folds must be comma-separated fold numbers, got '{args.folds}'") from None
        missing = [f for f in folds if f not in have]
        if missing or not folds:
            raise UsageError(f"--folds {args.folds}: the data's folds are {have}")
        return sorted(set(folds))
    others = [f for f in have[have.index(search_fold) + 1:] + have[:have.index(search_fold)]]
    if not others:
        raise UsageError(f"--revalidate-top needs a fold besides the search's fold {search_fold}; the data has {have}")
    return others[:2]


def _prepare_resume(args, storage_path: str) -> Plan:
    exp = storage.join(storage_path, args.name)
    text = storage.read_text(storage.join(exp, META_FILE))
    if text is None:
        raise UsageError(f"no birdtune experiment '{args.name}' in {storage_path} to resume")
    if args.address:
        _probe_address(args.address)
    meta = yaml.safe_load(text)
    cfg = TrainConfig.from_dict(meta["base"])
    return Plan(args, spaces.get(meta["space"]), cfg.to_dict(), meta["searched"], _load(cfg), exp, storage_path,
                args.name, meta["num_samples"], meta["max_t"], meta)


def _check_model(cfg: TrainConfig) -> None:
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


def _load(cfg: TrainConfig) -> DecodedData:
    from core.data import load_data, split_folds

    t0 = time.perf_counter()
    data = load_data(cfg.csv, cfg.img_size, cfg.num_classes, progress=True, memory_limit_gb=cfg.memory_limit_gb)
    split_folds(data.table, cfg.fold)
    if data.lazy:
        h, w = data.images.shape[1:]
        print(f"birdtune: {len(data.table)} images ({data.num_classes} classes) would take "
              f"{len(data.table) * h * w / 1e9:.1f} GB decoded, above memory_limit_gb={cfg.memory_limit_gb:g}: "
              "every trial reads them from disk per batch (slower; raise the limit if memory allows)")
    else:
        print(f"birdtune: {len(data.table)} images ({data.num_classes} classes) decoded once into "
              f"{data.nbytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s; shared with every trial")
    return data


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_resources(args, cpus: float, gpus: float) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it now."""
    if args.cpus_per_trial > cpus:
        raise UsageError(f"--cpus-per-trial {args.cpus_per_trial:g} but the cluster has {cpus:g} CPUs")
    if args.gpus_per_trial > 0 and gpus == 0:
        raise UsageError("--gpus-per-trial is set but no GPU is visible (torch.cuda.device_count() == 0); "
                         "use --gpus-per-trial 0 to train on CPUs")
    if args.gpus_per_trial > gpus:
        raise UsageError(f"--gpus-per-trial {args.gpus_per_trial:g} but the cluster has {gpus:g} GPUs")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _check_dashboard_host(args) -> None:
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
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address must be auto, host:port or ray://host:port, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise UsageError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with `ray start --head`") from None


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def start_ray(plan: Plan) -> None:
    args = plan.args
    if args.address and "RAY_AUTH_MODE" not in os.environ and _token_available():
        # Ray turns token auth on by itself only for clusters it starts; a driver joining an existing
        # cluster must opt in, before `import ray` reads its config. As Ray does locally: a token at
        # hand means token mode.
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return
    kw: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=args.verbose)
    if args.address:
        try:
            ctx = ray.init(address=args.address, **kw)
        except Exception as e:  # auth, version mismatch, cluster gone since the probe
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            if "token" in str(e).lower():
                reason = ("the cluster requires token authentication and this machine has no matching token; "
                          "copy the head's ~/.ray/auth_token here or set RAY_AUTH_TOKEN")
            raise UsageError(f"cannot connect to the Ray cluster at {args.address}: {reason[:300]}") from None
        total = ray.cluster_resources()
        try:
            _check_resources(args, total.get("CPU", 0), total.get("GPU", 0))
        except UsageError:
            ray.shutdown()
            raise
    else:
        # address="local": a new cluster on this machine. Without it ray.init joins whatever cluster
        # /tmp/ray/ray_current_cluster names, and waits for minutes if that one has died.
        ctx = ray.init(address="local", include_dashboard=not args.no_dashboard,
                       dashboard_host=args.dashboard_host, **kw)
    url = getattr(ctx, "dashboard_url", None)
    if url:
        plan.dashboard = f"http://{url}"
        print(f"birdtune: Ray dashboard at {plan.dashboard}  (Cluster -> Actors: the ImplicitFunc actors run the "
              "trials, with their logs)", flush=True)
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
            print("birdtune: the dashboard asks for a token: run `ray get-auth-token` on this machine and paste "
                  "what it prints into the dashboard's sign-in box", flush=True)


def write_meta(plan: Plan) -> None:
    """search.yaml: what export, --resume and the report read back."""
    storage.write_text(storage.join(plan.exp, META_FILE), yaml.safe_dump(plan.meta, sort_keys=False))


def _trainable(plan: Plan):
    from ray import tune

    from search.trainable import train_trial

    cpus, gpus = plan.meta["cpus_per_trial"], plan.meta["gpus_per_trial"]
    return tune.with_resources(tune.with_parameters(train_trial, data=plan.data, base=plan.base, cpus=cpus),
                               {"cpu": cpus, "gpu": gpus})


def concurrency(plan: Plan) -> int:
    import ray

    total = ray.cluster_resources()
    cpus, gpus = plan.meta["cpus_per_trial"], plan.meta["gpus_per_trial"]
    n = plan.args.concurrency or max(1, int(total.get("CPU", 1) // cpus))
    if gpus:
        n = min(n, max(1, int(total.get("GPU", 0) / gpus + 1e-9)))
    return n


def reuse_actors(address: str | None) -> bool:
    """Whether a trial's worker process (its imports, CUDA context) is kept for the next trial: on a
    one-node cluster not joined with --address, yes (it saves ~5 s a trial on a CPU: Ray 2.60's actor start
    plus importing torch/timm). Not when joining a cluster or when it has several nodes: Ray 2.60 errors,
    instead of retrying, a trial handed a cached actor whose node has gone (TuneController's
    `_process_trial_failure` recovers RUNNING trials only, a reused actor's trial is PENDING)."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return not address and len(alive) == 1


def make_search(plan: Plan, n: int):
    """(search_alg, param_space, scheduler) as the plan asks, for `n` trials at a time."""
    from search.searcher import make_scheduler, make_searcher

    meta = plan.meta
    searcher, param_space = make_searcher(meta.get("searcher", "tpe"), plan.space, max_t=plan.epochs,
                                          seed=meta["seed"], study_name=plan.name, db_path=meta.get("study"),
                                          concurrency=n, num_samples=plan.num_samples)
    scheduler = make_scheduler(meta.get("scheduler", "asha"), max_t=plan.epochs, grace_period=meta["grace_period"],
                               reduction_factor=meta["reduction_factor"])
    return searcher, param_space, scheduler


def build_tuner(plan: Plan, make=make_search, callbacks: tuple = ()):
    """The search's Tuner (or the restored one with --resume); `make` builds its searcher and scheduler;
    `callbacks` are extra Tune callbacks (the overhead benchmark's timeline)."""
    import optuna
    from ray import tune

    meta, args = plan.meta, plan.args
    trainable = _trainable(plan)
    if args.resume:
        return tune.Tuner.restore(plan.exp, trainable=trainable, resume_unfinished=True, resume_errored=True)
    n = concurrency(plan)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if meta.get("study"):
        Path(meta["study"]).parent.mkdir(parents=True, exist_ok=True)
    searcher, param_space, scheduler = make(plan, n)
    reuse = reuse_actors(args.address)
    print(f"birdtune: space '{plan.space.name}': {plan.num_samples} trials of up to {plan.epochs} epochs, "
          f"{n} at a time ({meta['cpus_per_trial']} CPU, {meta['gpus_per_trial']} GPU each, worker processes "
          f"{'reused' if reuse else 'fresh per trial'}); searching "
          f"{', '.join(plan.searched)} with {meta.get('searcher', 'tpe')} + {meta.get('scheduler', 'asha')}", flush=True)
    if meta.get("study"):
        print(f"birdtune: Optuna study in {meta['study']}  (live: optuna-dashboard sqlite:///{meta['study']})",
              flush=True)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan.num_samples,
                                    max_concurrent_trials=n, time_budget_s=args.time_budget,
                                    reuse_actors=reuse),
        run_config=_run_config(plan, plan.name, plan.storage_path, callbacks=callbacks),
    )


def _run_config(plan: Plan, name: str, storage_path: str, total: int | None = None, callbacks: tuple = ()):
    from ray import tune

    from search.progress import LiveView

    args = plan.args
    return tune.RunConfig(name=name, storage_path=storage_path,
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                          failure_config=tune.FailureConfig(max_failures=args.max_failures),
                          verbose=2 if args.verbose else 0,
                          callbacks=list(callbacks) + ([] if args.verbose else [
                              LiveView(plan.epochs, total or plan.num_samples, plan.searched, plan.dashboard)]))


def _revalidate(plan: Plan) -> bool:
    """Run (or continue) the re-validation of the top configs; True if it was interrupted."""
    from search import revalidate
    from search.export import trial_table

    table, _ = trial_table(plan.exp, plan.meta)
    if table.empty or table["status"].eq("unfinished").any():
        return False  # the search itself did not finish (time budget, interruption): nothing final to re-validate
    tuner = revalidate.build_tuner(plan, table)
    if tuner is not None:
        tuner.fit()
    return False


def _format_ranking(plan: Plan) -> str:
    from search import revalidate

    runs, _ = revalidate.table(plan.exp, plan.meta)
    if runs is None:
        return "(none)"
    rank = revalidate.ranking(runs, plan.meta["revalidate_folds"])
    rows = [{"trial_index": r.trial_index, **{f"fold {f}": r.per_fold.get(f, float("nan"))
                                              for f in plan.meta["revalidate_folds"]}, "mean": r.mean_cmap}
            for r in rank.itertuples()]
    import pandas as pd

    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        plan = prepare(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # with num_to_keep=1 every checkpoint forces a state snapshot; Ray warns about that each time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not args.verbose:  # Ray's legacy reporter at verbose=0 prints nothing: the LiveView speaks instead
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        start_ray(plan)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.resume:
        write_meta(plan)
    tuner = build_tuner(plan)
    interrupted = False
    try:
        tuner.fit()
        if plan.meta.get("revalidate_top"):
            interrupted = _revalidate(plan)
    except KeyboardInterrupt:
        interrupted = True
    table = export(plan.exp, quiet=True)
    print()
    print(format_table(table, plan.searched))
    for row in table[table["status"] == "errored"].itertuples() if not table.empty else ():
        print(f"trial {row.trial_index} errored: {row.error}")
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    epochs = int(table["epochs"].sum()) if not table.empty else 0
    print(f"\n{len(table)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())}); {epochs} trial-epochs "
          f"of at most {len(table) * plan.epochs}; {time.time() - t0:.0f} s")
    best_cfg = storage.join(plan.exp, "best", "config.yaml")
    if storage.exists(best_cfg):
        best = table.loc[table["best_cmap"].idxmax()]
        print(f"best: trial {best['trial_index']} cmap {best['best_cmap']:.4f} with "
              + ", ".join(f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}" for k in plan.searched))
        head = storage.read_text(best_cfg) or ""
        if "revalidation_mean_cmap" in head:
            print("re-validation (best-epoch cmap per fold):\n" + _format_ranking(plan))
            print("chosen by re-validation:\n" + "\n".join(ln for ln in head.splitlines() if ln.startswith("#")))
        print(f"exported: {best_cfg} (retrain: python -m core.train --config {best_cfg}), "
              f"{storage.join(plan.exp, 'best', 'model.pt')}, trials.parquet, trials.csv")
    if storage.exists(storage.join(plan.exp, "report.html")):
        print(f"report: {storage.join(plan.exp, 'report.html')}")
    if interrupted or counts.get("unfinished"):
        print(f"interrupted: continue with  python -m search.run --name {plan.name} --resume"
              + (f" --storage-path {args.storage_path}" if args.storage_path != "./results" else ""))
        return 130 if interrupted else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
