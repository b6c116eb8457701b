"""Top-k re-validation: the K best configs of a search retrained at full length on other folds, as Ray
trials, and ranked by their mean cmAP across those folds (one noisy validation fold picks winners badly)."""
from __future__ import annotations

from typing import Any

import pandas as pd

from search import storage

SUBDIR = "revalidate"  # a Tune experiment inside the search's folder
OK = ("completed", "stopped_early", "unfinished")


def candidates(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k trials with the highest best-epoch cmAP among those that did not error or diverge."""
    ok = table[table["status"].isin(OK) & table["best_cmap"].notna()]
    return ok.sort_values(["best_cmap", "trial_index"], ascending=[False, True]).head(k)


def _py(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def runs(table: pd.DataFrame, searched: list[str], k: int, folds: list[int]) -> list[dict[str, Any]]:
    """One grid item per (candidate, fold), in rank order."""
    return [{"trial_id": row["trial_id"], "trial_index": int(row["trial_index"]), "fold": int(f),
             "params": {p: _py(row[p]) for p in searched}}
            for _, row in candidates(table, k).iterrows() for f in folds]


def build_tuner(plan, table: pd.DataFrame):
    """The re-validation Tuner (restored if an earlier run of it was interrupted); None if nothing to rerun."""
    from ray import tune

    from search.run import _run_config, _trainable, concurrency, reuse_actors

    exp = storage.join(plan.exp, SUBDIR)
    if storage.exists(storage.join(exp, "tuner.pkl")):
        return tune.Tuner.restore(exp, trainable=_trainable(plan), resume_unfinished=True, resume_errored=True)
    items = runs(table, plan.searched, plan.meta["revalidate_top"], plan.meta["revalidate_folds"])
    if not items:
        return None
    print(f"birdtune: re-validating the {len(items) // len(plan.meta['revalidate_folds'])} best configs at "
          f"{plan.epochs} epochs on folds {plan.meta['revalidate_folds']} ({len(items)} trials)", flush=True)
    from ray.tune.schedulers import FIFOScheduler

    return tune.Tuner(_trainable(plan), param_space={"revalidate": tune.grid_search(items)},
                      tune_config=tune.TuneConfig(num_samples=1, scheduler=FIFOScheduler(),
                                                  max_concurrent_trials=concurrency(plan),
                                                  reuse_actors=reuse_actors(plan.args.address)),
                      run_config=_run_config(plan, SUBDIR, plan.exp, total=len(items)))


def table(exp: str, meta: dict[str, Any]):
    """(one row per re-validation run: the search trial it re-ran, fold, best cmAP, epochs, status; its
    ExperimentAnalysis), or (None, None) when the experiment has no re-validation."""
    from ray.tune import ExperimentAnalysis

    from search.export import trial_outcome

    sub = storage.join(exp, SUBDIR)
    if not storage.exists(storage.join(sub, "tuner.pkl")):
        return None, None
    try:
        analysis = ExperimentAnalysis(sub, default_metric=meta["metric"], default_mode=meta["mode"])
    except ValueError:  # no trial started yet
        return None, None
    rows = []
    for trial in analysis.trials:
        item = trial.config["revalidate"]
        df = analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        rows.append(dict(run_id=trial.trial_id, trial_id=item["trial_id"], trial_index=item["trial_index"],
                         fold=item["fold"], **trial_outcome(trial, df, meta["metric"], meta["max_t"]),
                         **item["params"]))
    if not rows:
        return None, None
    return pd.DataFrame(rows).sort_values(["trial_index", "fold"]).reset_index(drop=True), analysis


def ranking(runs_table: pd.DataFrame, folds: list[int]) -> pd.DataFrame:
    """Candidates by mean cmAP over the folds; only candidates with every fold completed are ranked."""
    rows = []
    for (trial_id, index), g in runs_table.groupby(["trial_id", "trial_index"], sort=False):
        done = g[g["status"] == "completed"]
        per_fold = {int(f): float(c) for f, c in zip(done["fold"], done["best_cmap"])}
        complete = sorted(per_fold) == sorted(folds)
        rows.append(dict(trial_id=trial_id, trial_index=int(index), folds_done=len(per_fold),
                         mean_cmap=sum(per_fold.values()) / len(per_fold) if complete else float("nan"),
                         per_fold=per_fold))
    out = pd.DataFrame(rows)
    return out.sort_values(["mean_cmap", "trial_index"], ascending=[False, True], na_position="last").reset_index(drop=True)
