"""`--log-to mlflow[=URI],tensorboard,wandb[=PROJECT]`: the search's trials in the trackers people already use,
through Ray Tune's own logger callbacks (MLflowLoggerCallback, TBXLoggerCallback, WandbLoggerCallback): every
trial's config, its per-epoch metrics and how it ended. After the search, MLflow's runs get birdtune's status
of each trial (completed / stopped_early / errored / ...) and the chosen trial the tag `birdtune.best`.
The packages come with `pip install -e '.[tracking]'`.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from search import storage

TARGETS = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}  # target -> package it needs
EXTRA = "pip install -e '.[tracking]'"


@dataclass(frozen=True)
class Target:
    name: str  # mlflow | tensorboard | wandb
    arg: str = ""  # mlflow: tracking URI; wandb: project


def parse(text: str | None) -> list[Target]:
    """The targets of --log-to, checked: known names, each once, their packages installed, an MLflow
    server that answers. ValueError (one line) otherwise."""
    if not text:
        return []
    out: list[Target] = []
    for part in (p.strip() for p in text.split(",")):
        name, _, arg = part.partition("=")
        if name not in TARGETS:
            raise ValueError(f"--log-to: unknown target '{name}'; choose from mlflow[=URI], tensorboard, wandb[=PROJECT]")
        if name == "tensorboard" and arg:
            raise ValueError("--log-to tensorboard takes no value: its event files go into each trial's folder")
        if any(t.name == name for t in out):
            raise ValueError(f"--log-to names {name} twice")
        if importlib.util.find_spec(TARGETS[name]) is None:
            raise ValueError(f"--log-to {name} needs the {TARGETS[name]} package: {EXTRA}")
        out.append(Target(name, arg))
    for t in out:
        if t.name == "mlflow" and t.arg.startswith(("http://", "https://")):
            _probe(t.arg)
    return out


def _probe(uri: str) -> None:
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=3).close()
    except OSError as e:
        raise ValueError(f"--log-to mlflow={uri}: no MLflow server answers there ({e.strerror or e}); start one "
                         "with `mlflow server --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000`"
                         ) from None


def mlflow_uri(target: Target, exp: str, name: str) -> str:
    """The tracking URI: the one given, else a SQLite file in the experiment folder (under ./results for a
    URI storage path: SQLite needs a local file)."""
    if target.arg:
        return target.arg
    folder = os.path.abspath(os.path.join("results", name)) if storage.is_uri(exp) else exp
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{os.path.join(folder, 'mlflow.db')}"


def callbacks(targets: list[Target], exp: str, name: str) -> list:
    """Ray Tune logger callbacks for the targets (each MLflow run and W&B run is one trial)."""
    out = []
    for t in targets:
        if t.name == "mlflow":
            import logging

            from ray.air.integrations.mlflow import MLflowLoggerCallback

            for noisy in ("mlflow", "alembic"):  # 'Creating initial MLflow database tables...' and the like
                logging.getLogger(noisy).setLevel(logging.WARNING)

            out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri(t, exp, name), experiment_name=name,
                                            tags={"birdtune.experiment": exp}))
        elif t.name == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            out.append(TBXLoggerCallback())
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            wandb_dir = None if storage.is_uri(exp) else exp  # offline runs land in <experiment>/wandb
            out.append(WandbLoggerCallback(project=t.arg or "birdtune", group=name, log_config=True,
                                           **({"dir": wandb_dir} if wandb_dir else {})))
    return out


def where(targets: list[Target], exp: str, name: str) -> list[str]:
    """One line per target saying where to look."""
    lines = []
    for t in targets:
        if t.name == "mlflow":
            uri = mlflow_uri(t, exp, name)
            look = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else uri
            lines.append(f"birdtune: logging to MLflow experiment '{name}' at {uri}  (view: {look})")
        elif t.name == "tensorboard":
            lines.append(f"birdtune: logging TensorBoard event files into each trial's folder  "
                         f"(view: tensorboard --logdir {storage.shell(exp)})")
        else:
            mode = os.environ.get("WANDB_MODE", "online")
            lines.append(f"birdtune: logging to W&B project '{t.arg or 'birdtune'}', group '{name}' ({mode})")
    return lines


def finish(targets: list[Target], exp: str, name: str, table, best_trial_id: str | None) -> None:
    """MLflow: each trial's run gets its birdtune status; the chosen trial's run the tag birdtune.best=true,
    and the MLflow experiment the best trial's id and cmAP."""
    target = next((t for t in targets if t.name == "mlflow"), None)
    if target is None or table is None or table.empty:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri(target, exp, name))
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return
    status = dict(zip(table["trial_id"], table["status"]))
    for run in client.search_runs([experiment.experiment_id], max_results=10_000):
        trial_name = run.data.tags.get("trial_name", "")
        trial_id = next((t for t in status if trial_name.endswith(t)), None)
        if trial_id is None:
            continue
        client.set_tag(run.info.run_id, "birdtune.status", status[trial_id])
        client.set_tag(run.info.run_id, "birdtune.best", str(trial_id == best_trial_id).lower())
    if best_trial_id is not None:
        row = table[table["trial_id"] == best_trial_id].iloc[0]
        client.set_experiment_tag(experiment.experiment_id, "birdtune.best_trial_id", best_trial_id)
        client.set_experiment_tag(experiment.experiment_id, "birdtune.best_cmap", f"{row['best_cmap']:.6f}")
