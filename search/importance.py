"""Parameter importances (Optuna's fANOVA evaluator) from a search's trials, for importance.csv and the report.

Two targets, because ASHA leaves few trials at full length: the best-epoch cmAP of the trials that ran
every epoch, and the cmAP every trial reached at the first rung (the grace period). Both are computed
from the trials table, so they exist for every searcher (Ray's random search keeps no Optuna study).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd

import spaces
from search import layout
from search.tables import py

COLUMNS = ["target", "param", "importance", "trials", "evaluator"]
MIN_TRIALS = 3  # fANOVA on fewer points says nothing
# fANOVA's time grows faster than its points (a forest grown on them, marginalised over every split: 23 s at
# 250 of a 10,000-trial LCBench search's trials, 62 s at 500, 187 s at 1,000, here): past this many of a
# target's trials, a seeded random draw of this many stands for them
MAX_POINTS = 500


def distributions(space: spaces.Space) -> dict[str, optuna.distributions.BaseDistribution]:
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name, d in space.distributions().items():
        if d["kind"] == "categorical":
            out[name] = optuna.distributions.CategoricalDistribution(d["choices"])
        elif d["kind"] == "int":
            out[name] = optuna.distributions.IntDistribution(d["low"], d["high"], log=d["log"], step=d["step"] or 1)
        else:
            out[name] = optuna.distributions.FloatDistribution(d["low"], d["high"], log=d["log"], step=d["step"])
    return out


def _study(points: list[tuple[dict[str, Any], float]], dists) -> optuna.Study:
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created" line per target
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(level)
    for params, value in points:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    return study


def importances(table: pd.DataFrame, curves: pd.DataFrame, space_name: str, searched: list[str], max_t: int,
                rung: int, seed: int = 0, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Rows of COLUMNS, one per (target, searched parameter); empty when no target has MIN_TRIALS trials.
    `rung` is the epoch of ASHA's first comparison (the grace period). `trials` counts a target's trials;
    past `max_points` of them, fANOVA sees a seeded random draw of that many (the evaluator says so)."""
    space = spaces.get(space_name)
    dists = {k: v for k, v in distributions(space).items() if k in searched}
    if table.empty or not dists:
        return pd.DataFrame(columns=COLUMNS)
    metric = spaces.METRIC
    at_rung = curves[curves["epoch"] == rung].set_index("trial_id")[metric] if not curves.empty else {}
    targets = {
        f"best {metric} of trials that ran all {max_t} epochs":
            [(r, r["best_cmap"]) for _, r in table[table["status"] == layout.COMPLETED].iterrows()],
        f"{metric} at epoch {rung} (every trial that got there)":
            [(r, at_rung[r["trial_id"]]) for _, r in table.iterrows()
             if r["status"] not in (layout.ERRORED, layout.DIVERGED) and r["trial_id"] in at_rung.index]
        if len(at_rung) and rung < max_t else [],  # (at max_t: the first target's trials again)
    }
    rows = []
    for target, pairs in targets.items():
        points = [({k: _value(r[k], d) for k, d in dists.items()}, float(v)) for r, v in pairs if v == v]
        if len(points) < MIN_TRIALS or len({v for _, v in points}) < 2:
            continue
        used, how = points, "fANOVA"
        if len(points) > max_points:
            draw = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
            used, how = [points[i] for i in sorted(draw)], f"fANOVA on {max_points} drawn at random"
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        got = optuna.importance.get_param_importances(_study(used, dists), evaluator=evaluator, normalize=True)
        rows += [dict(target=target, param=k, importance=float(v), trials=len(points), evaluator=how)
                 for k, v in got.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def _value(v: Any, dist) -> Any:
    v = py(v)
    return int(round(v)) if isinstance(dist, optuna.distributions.IntDistribution) else v


HELD, DID_NOT = 0.5, 0.2  # Kendall tau at or above which a rung's ranks "held", below which they "did not"
MIN_PAIRS = 5  # fewer trials past a rung say nothing about it (Kendall tau on 4 pairs swings by 0.33 a swap)


def rung_trust(table: pd.DataFrame, curves: pd.DataFrame, rung_epochs: list[int], max_t: int) -> list[dict[str, Any]]:
    """How far early stopping could be trusted in this search: for each ASHA rung, Kendall's tau between the
    trials' best score up to that epoch and the final best score of the trials that went on past it, with one
    line of advice. Rows: rung, tau (NaN with too few trials), trials, advice."""
    from scipy.stats import kendalltau

    metric, out = spaces.METRIC, []
    if table.empty or curves.empty:
        return out
    usable = table[~table["status"].isin((layout.ERRORED, layout.DIVERGED))]
    for i, rung in enumerate(rung_epochs):
        went_on = usable[usable["epochs"] > rung]
        early = (curves[(curves["epoch"] <= rung) & curves["trial_id"].isin(went_on["trial_id"])]
                 .groupby("trial_id")[metric].max())
        final = went_on.set_index("trial_id")["best_cmap"].reindex(early.index)
        n = int(final.notna().sum())
        tau = float(kendalltau(early[final.notna()], final.dropna()).statistic) if n >= MIN_PAIRS else float("nan")
        later = rung_epochs[i + 1] if i + 1 < len(rung_epochs) else max_t
        if tau != tau:
            advice = f"too few trials went past epoch {rung} ({n}) to tell whether its ranks held"
        elif tau >= HELD:
            advice = f"epoch-{rung} ranks held (tau {tau:.2f}, {n} trials): early stopping there was safe"
        elif tau >= DID_NOT:
            advice = (f"epoch-{rung} ranks held only partly (tau {tau:.2f}, {n} trials): some configs stopped "
                      f"there may have caught up; --grace-period {later} judges later")
        else:
            advice = (f"epoch-{rung} ranks did not hold (tau {tau:.2f}, {n} trials): early stopping there was "
                      f"unsafe; consider --grace-period {later}")
        out.append(dict(rung=int(rung), tau=tau, trials=n, advice=advice))
    return out
