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


def test_past_max_points_a_seeded_draw_stands_for_a_targets_trials_and_says_so():
    table, curves = scored_trials()
    full = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=3, rung=1)
    cut = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=3, rung=1, max_points=5)
    by = {t: g.set_index("param") for t, g in cut.groupby("target")}
    rung_target = next(t for t in by if "every trial" in t)
    # 8 trials at the first rung, 5 of them seen: counted as 8, the evaluator names the draw; 4 completed: all
    assert by[rung_target]["trials"].eq(8).all() and by[rung_target]["evaluator"].eq("fANOVA on 5 drawn at random").all()
    assert set(cut[cut.target != rung_target]["evaluator"]) == {"fANOVA"}
    assert by[rung_target]["importance"]["lr"] > 0.5  # lr still drives the score in the draw
    again = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=3, rung=1, max_points=5)
    pd.testing.assert_frame_equal(cut, again)  # the same draw every time
    assert not cut.equals(full)


def test_with_the_first_rung_at_the_last_epoch_one_target_is_computed():
    table, curves = scored_trials()
    imp = importance.importances(table, curves, "smoke", ["lr", "drop_rate"], max_t=1, rung=1)
    assert imp["target"].nunique() <= 1  # (every trial at epoch 1 is every trial that ran all 1 epochs)


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
