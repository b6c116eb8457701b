"""Start a local Ray cluster or join one (--address), with the checks that come first (the address answers,
the dashboard is not open to anyone, the trial fits the cluster); what it offers the search: trials at once,
worker reuse, the dashboard's URL."""
from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.cli import UsageError
from search.spec import Plan

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Cluster:
    dashboard: str | None  # URL, when this search started the dashboard
    concurrency: int  # trials at once
    reuse_actors: bool  # a trial slot's worker process goes on to its next trial


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def untested_versions() -> str | None:
    """One line naming Ray / Optuna releases other than the tested ones (layout.TESTED_VERSIONS), or None."""
    from importlib.metadata import PackageNotFoundError, version

    from search.layout import TESTED_VERSIONS

    found = {}
    for name, tested in TESTED_VERSIONS.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue
        if have != tested and not have.startswith(tested + "."):
            found[name] = have
    if not found:
        return None
    return ("birdtune: tested with " + " and ".join(f"{n.capitalize()} {v}" for n, v in TESTED_VERSIONS.items())
            + "; this environment has " + ", ".join(f"{n.capitalize()} {v}" for n, v in found.items())
            + ": the search goes on, but birdtune relies on some of their internals")


def check_dashboard_host(no_dashboard: bool, address: str | None, host: str) -> None:
    """Anyone who reaches the dashboard's API can run code on the cluster: loopback by default,
    a warning for any other address, and a refusal when token authentication is off."""
    if no_dashboard or address or host in LOOPBACK:
        return
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise UsageError(f"--dashboard-host {host} with RAY_AUTH_MODE=disabled would let anyone who "
                         "reaches it run code on this machine; keep 127.0.0.1 or turn token authentication on")
    print(f"warning: the Ray dashboard will listen on {host}: anyone who reaches it and holds the "
          "token (`ray get-auth-token`) can submit jobs that run code on this cluster", file=sys.stderr)


def probe_address(address: str) -> None:
    """A cluster to join answers at --address (ray.init to a dead address waits for minutes)."""
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


def check_resources(cpus: float, gpus: float, have_cpus: float, have_gpus: float) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it now."""
    if cpus > have_cpus:
        raise UsageError(f"--cpus-per-trial {cpus:g} but the cluster has {have_cpus:g} CPUs")
    if gpus > 0 and have_gpus == 0:
        raise UsageError("--gpus-per-trial is set but no GPU is visible (torch.cuda.device_count() == 0); "
                         "use --gpus-per-trial 0 to train on CPUs")
    if gpus > have_gpus:
        raise UsageError(f"--gpus-per-trial {gpus:g} but the cluster has {have_gpus:g} GPUs")


def local_gpus() -> int:
    """The GPUs this machine has (torch.cuda: one that sees none says 0)."""
    import torch

    return torch.cuda.device_count()


def start(plan: Plan) -> Cluster:
    """ray.init for the plan (a caller that already connected, such as a test harness, is kept), then the
    resources checked against the trial's request."""
    opts, spec = plan.options, plan.spec
    note = untested_versions()
    if note:
        print(note, flush=True)
    if opts.address and "RAY_AUTH_MODE" not in os.environ and _token_available():
        # Ray turns token auth on by itself only for clusters it starts; a driver joining an existing
        # cluster must opt in, before `import ray` reads its config. As Ray does locally: a token at
        # hand means token mode.
        os.environ["RAY_AUTH_MODE"] = "token"
    if not opts.address:
        # Ray's own default for a cluster it starts; set explicitly, Ray does not warn about it on stderr
        # (with or without the dashboard): the search's dashboard line says what matters
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    dashboard = None
    if not ray.is_initialized():
        kw: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=opts.verbose)
        if opts.address:
            try:
                ctx = ray.init(address=opts.address, **kw)
            except Exception as e:  # auth, version mismatch, cluster gone since the probe
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                if "token" in str(e).lower():
                    reason = ("the cluster requires token authentication and this machine has no matching token; "
                              "copy the head's ~/.ray/auth_token here or set RAY_AUTH_TOKEN")
                raise UsageError(f"cannot connect to the Ray cluster at {opts.address}: {reason[:300]}") from None
        else:
            # address="local": a new cluster on this machine. Without it ray.init joins whatever cluster
            # /tmp/ray/ray_current_cluster names, and waits for minutes if that one has died.
            ctx = ray.init(address="local", include_dashboard=opts.dashboard, dashboard_host=opts.dashboard_host, **kw)
        url = getattr(ctx, "dashboard_url", None)
        dashboard = f"http://{url}" if url else None
    total = ray.cluster_resources()
    if opts.address:
        try:
            check_resources(spec.cpus_per_trial, spec.gpus_per_trial, total.get("CPU", 0), total.get("GPU", 0))
        except UsageError:
            ray.shutdown()
            raise
    if dashboard:
        print(f"birdtune: Ray dashboard at {dashboard}  (Cluster -> Actors: the ImplicitFunc actors run the "
              "trials, with their logs)", flush=True)
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled":
            print("birdtune: the dashboard asks for a token: run `ray get-auth-token` on this machine and paste "
                  "what it prints into the dashboard's sign-in box", flush=True)
    return Cluster(dashboard, concurrency(plan, total), reuse_actors(opts.address))


def concurrency(plan: Plan, total: dict[str, float]) -> int:
    """--concurrency, or as many trials as the cluster's CPUs (and GPUs) hold at once."""
    cpus, gpus = plan.spec.cpus_per_trial, plan.spec.gpus_per_trial
    n = plan.options.concurrency or max(1, int(total.get("CPU", 1) // cpus))
    if gpus:
        n = min(n, max(1, int(total.get("GPU", 0) / gpus + 1e-9)))
    return n


def reuse_actors(address: str | None) -> bool:
    """Whether a trial's worker process (its imports, CUDA context) is kept for the next trial: on a
    one-node cluster not joined with --address, yes (the README's Performance section says what it saves).
    Not when joining a cluster or when it has several nodes: Ray 2.60 errors, instead of retrying, a trial
    handed a cached actor whose node has gone (TuneController's `_process_trial_failure` recovers RUNNING
    trials only, a reused actor's trial is PENDING)."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    return not address and len(alive) == 1
