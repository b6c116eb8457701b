"""An experiment's tables, built from Ray's results: what each trial became (status, outcome), the trials table,
the curves table, the re-validation table, which trials are usable; and the Outcome that holds them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import spaces
from search import layout, storage
from search.budget import Spent
from search.spec import SearchSpec

TRIAL_COLUMNS = ["trial_id", "trial_index", "status"]


def py(v: Any) -> Any:
    """A numpy scalar as the plain Python value (for YAML, JSON and Ray configs)."""
    return v.item() if hasattr(v, "item") else v


def trial_status(ray_status: str, epochs: int, max_t: int, diverged: bool) -> str:
    """One of layout.STATUSES from Ray's trial status and what the trial reported."""
    if ray_status == "ERROR":
        return layout.ERRORED
    if diverged:
        return layout.DIVERGED
    if ray_status == "TERMINATED":
        return layout.COMPLETED if epochs >= max_t else layout.STOPPED_EARLY
    return layout.UNFINISHED


def never_ran(trials) -> set[str]:
    """The trials that reported no epoch and did not error: created, then ended by the search before their
    worker started (a --time-budget spent while one waits for its worker, Ctrl-C), which no on_trial_start
    announced. (Ray's last_result of such a trial holds its trial_id alone.)"""
    return {t.trial_id for t in trials if t.status != "ERROR" and spaces.TIME_ATTR not in (t.last_result or {})}


def trial_outcome(trial, df: pd.DataFrame, metric: str, max_t: int) -> dict[str, Any]:
    """best_cmap, epochs and status of one trial from its result rows (search and re-validation alike)."""
    has = not df.empty and metric in df
    epochs = int(df["epoch"].max()) if has else 0
    diverged = has and "status" in df and (df["status"] == "diverged").any()
    return dict(best_cmap=float(df[metric].max()) if has else float("nan"), epochs=epochs,
                status=trial_status(trial.status, epochs, max_t, bool(diverged)))


def trial_number(trial) -> int | None:
    """The creation counter at the front of Ray's experiment tag ('3_lr=...'), or None."""
    tag = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return int(tag) if tag.isdigit() else None


def error_text(trial) -> str:
    """The last line of the trial's recorded traceback (the exception and its message)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file lives on a node or URI we cannot read
        text = ""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "error (no message recorded)"


def analysis(exp: str, metric: str, mode: str):
    """Ray's ExperimentAnalysis of an experiment folder or URI; None before any trial started."""
    from ray.tune import ExperimentAnalysis

    try:
        return ExperimentAnalysis(exp, default_metric=metric, default_mode=mode)
    except ValueError:
        return None


def trial_table(found, searched: list[str], metric: str, max_t: int, cut: set[str] = frozenset()) -> pd.DataFrame:
    """One row per trial of an ExperimentAnalysis, in launch order: trial_index 0..n-1, the searched
    values, best and last cmAP, epochs, status, wall time, the error of an errored trial. `cut` names
    the trials the search ended around (layout.CUT): unfinished, not stopped early."""
    if found is None:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    rows = []
    for trial in found.trials:
        df = found.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        number = trial_number(trial)
        row: dict[str, Any] = {"trial_id": trial.trial_id,
                               "trial_index": number if number is not None else 10**9 + len(rows)}
        row.update({k: trial.config.get(k) for k in searched})
        row.update(trial_outcome(trial, df, metric, max_t))
        if trial.trial_id in cut and row["status"] == layout.STOPPED_EARLY:
            row["status"] = layout.UNFINISHED
        has = row["epochs"] > 0
        row.update(last_cmap=float(df[metric].iloc[-1]) if has else float("nan"),
                   best_epoch=int(df.loc[df[metric].idxmax(), "epoch"]) if has else 0,
                   wall_s=float(df["time_total_s"].iloc[-1]) if has else 0.0)
        row["error"] = error_text(trial) if row["status"] == layout.ERRORED else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:  # the launch order; the counter starts at 1 or 0 depending on the searcher
        table = table.sort_values("trial_index").reset_index(drop=True)
        table["trial_index"] = range(len(table))
    return table


def curve_table(found, table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every trial's reported epochs: trial_index, trial_id, epoch, the metric, train/val loss, time."""
    cols = ["trial_index", "trial_id", "epoch", metric, "train_loss", "val_loss", "time_total_s"]
    if found is None or table.empty:
        return pd.DataFrame(columns=cols)
    index = dict(zip(table["trial_id"], table["trial_index"]))
    parts = []
    for trial_id, df in found.trial_dataframes.items():
        if df.empty or metric not in df or trial_id not in index:
            continue
        part = df.reindex(columns=cols[2:]).copy()
        part.insert(0, "trial_id", trial_id)
        part.insert(0, "trial_index", index[trial_id])
        # a trial restarted from a checkpoint reports its later epochs again: keep the last report of each
        parts.append(part.drop_duplicates("epoch", keep="last"))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts).sort_values(["trial_index", "epoch"]).reset_index(drop=True)


def revalidation_table(found, metric: str, max_t: int) -> pd.DataFrame | None:
    """One row per re-validation run: the search trial it re-ran, fold, best cmAP, epochs, status and
    the values; None when nothing ran."""
    if found is None:
        return None
    rows = []
    for trial in found.trials:
        item = trial.config["revalidate"]
        df = found.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        rows.append(dict(run_id=trial.trial_id, trial_id=item["trial_id"], trial_index=item["trial_index"],
                         fold=item["fold"], **trial_outcome(trial, df, metric, max_t), **item["params"]))
    if not rows:
        return None
    return pd.DataFrame(rows).sort_values(["trial_index", "fold"]).reset_index(drop=True)


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """The trials whose score may be exported or re-validated: completed or stopped early, with a score."""
    return table[table["status"].isin(layout.USABLE) & table["best_cmap"].notna()] if not table.empty else table


def format_table(table: pd.DataFrame, searched: list[str], limit: int = 40) -> str:
    """The trials table as text, best first: the summary's and `search.export`'s."""
    if table.empty:
        return "(no trials)"
    cols = ["trial_index", "status", "epochs", "best_cmap"] + searched + ["wall_s"]
    shown = table.sort_values("best_cmap", ascending=False, na_position="last").head(limit)[cols]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


# --- an experiment's outcome: what export computes once, writes, and the report and summary show ---
@dataclass
class Best:
    """The trial whose config and weights are exported."""

    trial_id: str
    trial_index: int
    params: dict[str, Any]
    header: dict[str, Any]  # best/config.yaml's comment header: which trial, its scores, how it was chosen
    checkpoint: Any  # the Ray checkpoint holding its best.pt, or None

    def header_text(self) -> str:
        """The header as best/config.yaml starts: YAML lines behind '# '."""
        import yaml

        return "".join(f"# {line}\n" for line in yaml.safe_dump(self.header, sort_keys=False).splitlines())


@dataclass
class Outcome:
    exp: str
    spec: SearchSpec
    table: pd.DataFrame  # one row per trial (trials.csv)
    curves: pd.DataFrame  # every reported epoch (curves.csv)
    importance: pd.DataFrame
    revalidation: pd.DataFrame | None  # one row per re-validation run
    ranking: pd.DataFrame | None  # candidates by mean cmAP over the re-validation folds
    best: Best | None
    cut: frozenset[str] = frozenset()  # trials the search ended around (time budget, Ctrl-C)
    trust: list = field(default_factory=list)  # importance.rung_trust: did each rung's ranks hold
    spent: Spent | None = None  # what the search spent, from its journal
    budget_ended: bool = False  # its compute budget ended it
    continued: int = 0  # trials that went on from their checkpoints after they had ended (journal.continued)

    @property
    def counts(self) -> dict[str, int]:
        return self.table["status"].value_counts().to_dict() if not self.table.empty else {}

    @property
    def continued_text(self) -> str:
        """', K of them continued from their checkpoints after they had ended' (empty when none was)."""
        if not self.continued:
            return ""
        one = self.continued == 1
        return (f", {self.continued} of them continued from "
                f"{'its checkpoint after it' if one else 'their checkpoints after they'} had ended")

    @property
    def resumable(self) -> bool:
        """Whether --resume has work left: trials not yet created, or unfinished ones Ray would restart
        (a trial the search ended around stays as it is: Ray marks it terminated)."""
        if self.budget_ended:
            return False
        if len(self.table) < (self.spec.num_samples or float("inf")):
            return True
        waiting = (self.table["status"] == layout.UNFINISHED) & ~self.table["trial_id"].isin(self.cut)
        return bool(waiting.any())

    @property
    def trial_epochs(self) -> int:
        return int(self.table["epochs"].sum()) if not self.table.empty else 0

    def best_config(self) -> dict[str, Any] | None:
        """The exported TrainConfig: the search's base with the chosen trial's values."""
        return None if self.best is None else self.config_for(self.best)

    def config_for(self, best: Best, folder: str = layout.BEST_DIR) -> dict[str, Any]:
        """The TrainConfig exported into `folder` for `best`: the search's base with its values, retraining
        into folder/retrain (or ./results/retrain-<trial> for a URI experiment)."""
        cfg = {**self.spec.base, **best.params}
        cfg["out_dir"] = (str(Path("results") / f"retrain-{best.trial_id}") if storage.is_uri(self.exp)
                          else os.path.join(self.exp, folder, "retrain"))
        return cfg
