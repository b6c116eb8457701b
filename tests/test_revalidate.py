"""Top-k re-validation: which configs are rerun on which folds, and their ranking by mean cmAP."""
import math

import pandas as pd
import pytest

from helpers import scored_trials
from search import revalidate


def test_revalidation_candidates_and_ranking():
    table, _ = scored_trials()
    table.loc[7, "status"] = "errored"
    cands = revalidate.candidates(table, 3)
    assert cands["trial_index"].tolist() == [6, 5, 4]  # the best scores, the errored trial 7 left out
    items = revalidate.runs(table, ["lr", "drop_rate"], 2, [1, 2])
    assert [(i["trial_index"], i["fold"]) for i in items] == [(6, 1), (6, 2), (5, 1), (5, 2)]
    assert items[0]["params"] == {"lr": pytest.approx(0.007), "drop_rate": pytest.approx(0.3)}
    runs = pd.DataFrame([dict(trial_id="t6", trial_index=6, fold=1, best_cmap=0.60, status="completed"),
                         dict(trial_id="t6", trial_index=6, fold=2, best_cmap=0.70, status="completed"),
                         dict(trial_id="t5", trial_index=5, fold=1, best_cmap=0.66, status="completed"),
                         dict(trial_id="t5", trial_index=5, fold=2, best_cmap=0.68, status="completed"),
                         dict(trial_id="t4", trial_index=4, fold=1, best_cmap=0.99, status="completed"),
                         dict(trial_id="t4", trial_index=4, fold=2, best_cmap=0.0, status="errored")])
    rank = revalidate.ranking(runs, [1, 2])
    assert rank["trial_index"].tolist() == [5, 6, 4]  # mean 0.67 beats 0.65; t4 lacks a fold
    assert rank.loc[0, "mean_cmap"] == pytest.approx(0.67) and math.isnan(rank.loc[2, "mean_cmap"])
    assert rank.loc[0, "per_fold"] == {1: 0.66, 2: 0.68}
