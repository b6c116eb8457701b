"""Top-k re-validation, plain pandas: which configs to retrain on other folds, and their ranking by mean cmAP
across those folds (one noisy validation fold picks winners badly). tuning.py runs the retraining."""
from __future__ import annotations

from typing import Any

import pandas as pd

from search import layout
from search.tables import py, usable


def candidates(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k trials with the highest best-epoch cmAP among those that did not error or diverge."""
    return usable(table).sort_values(["best_cmap", "trial_index"], ascending=[False, True]).head(k)


def runs(table: pd.DataFrame, searched: list[str], k: int, folds: list[int]) -> list[dict[str, Any]]:
    """One grid item per (candidate, fold), in rank order."""
    return [{"trial_id": row["trial_id"], "trial_index": int(row["trial_index"]), "fold": int(f),
             "params": {p: py(row[p]) for p in searched}}
            for _, row in candidates(table, k).iterrows() for f in folds]


def ranking(runs_table: pd.DataFrame, folds: list[int]) -> pd.DataFrame:
    """Candidates by mean cmAP over the folds; only candidates with every fold completed are ranked."""
    rows = []
    for (trial_id, index), g in runs_table.groupby(["trial_id", "trial_index"], sort=False):
        done = g[g["status"] == layout.COMPLETED]
        per_fold = {int(f): float(c) for f, c in zip(done["fold"], done["best_cmap"])}
        complete = sorted(per_fold) == sorted(folds)
        rows.append(dict(trial_id=trial_id, trial_index=int(index), folds_done=len(per_fold),
                         mean_cmap=sum(per_fold.values()) / len(per_fold) if complete else float("nan"),
                         per_fold=per_fold))
    out = pd.DataFrame(rows)
    return out.sort_values(["mean_cmap", "trial_index"], ascending=[False, True], na_position="last").reset_index(drop=True)


def format_ranking(rank: pd.DataFrame, folds: list[int]) -> str:
    """The ranking as the summary prints it: trial, cmAP per fold, mean."""
    rows = [{"trial_index": r.trial_index, **{f"fold {f}": r.per_fold.get(f, float("nan")) for f in folds},
             "mean": r.mean_cmap} for r in rank.itertuples()]
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}") if rows else "(none)"
