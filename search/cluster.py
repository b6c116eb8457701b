"""Start a local Ray cluster or join one (--address); what it offers the search: trials at once, worker reuse,
the dashboard's URL."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.plan import Plan, UsageError, check_resources


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
