"""Parameter importances (fANOVA on the trials table) and whether early ranks held at each rung."""
import pandas as pd
import pytest

from helpers import scored_trials
from search import importance


def test_importance_finds_the_parameter_that_drives_the_score():
    table, curves = scored_trials()
    imp = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=3, rung=1)
    assert set(imp["param"]) == {"lr", "drop_rate"} and imp["target"].nunique() == 2
    for target, g in imp.groupby("target"):
        assert g["importance"].sum() == pytest.approx(1.0)
        assert g.set_index("param")["importance"]["lr"] > 0.5, target
    assert set(imp["trials"]) == {4, 8}  # completed trials only / every trial at the first rung
    few = importance.importances(table.head(2), curves[curves.trial_index < 2], "smoke", ["lr", "drop_rate"], 3, 1)
    assert few.empty and list(few.columns) == importance.COLUMNS


def _trials(finals, early, epochs):
    table = pd.DataFrame(dict(trial_id=[f"t{i}" for i in range(len(finals))], best_cmap=finals, epochs=epochs,
                              status=["completed" if e == 8 else "stopped_early" for e in epochs]))
    curves = pd.DataFrame([dict(trial_id=f"t{i}", epoch=e, cmap=early[i] if e == 1 else finals[i])
                           for i in range(len(finals)) for e in range(1, epochs[i] + 1)])
    return table, curves


def test_rung_trust_says_whether_early_ranks_held():
    from search.importance import rung_trust

    finals = [0.5, 0.6, 0.7, 0.8, 0.9, 0.3]
    held = rung_trust(*_trials(finals, [0.1, 0.2, 0.3, 0.4, 0.5, 0.05], [8, 8, 8, 8, 8, 1]), [1, 4], 8)
    assert held[0]["rung"] == 1 and held[0]["trials"] == 5 and held[0]["tau"] == pytest.approx(1.0)
    assert "epoch-1 ranks held (tau 1.00, 5 trials)" in held[0]["advice"]
    flipped = rung_trust(*_trials(finals, [0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [8, 8, 8, 8, 8, 1]), [1, 4], 8)
    assert flipped[0]["tau"] == pytest.approx(-1.0)
    assert "did not hold" in flipped[0]["advice"] and "--grace-period 4" in flipped[0]["advice"]
    few = rung_trust(*_trials(finals[:3], [0.1, 0.2, 0.3], [8, 8, 1]), [1, 4], 8)
    assert few[0]["tau"] != few[0]["tau"] and "too few trials" in few[0]["advice"]
