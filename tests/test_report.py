"""report.html pieces: ASHA rungs, the cost figures, what the best config is compared with, and a page for
an experiment with no results yet."""
import pandas as pd
import pytest

import spaces
from search import report
from search.plan import SearchSpec
from search.results import Best, Outcome

SPEC = SearchSpec(space="smoke", max_t=3, grace_period=1, reduction_factor=2, num_samples=2,
                  searched=["lr", "drop_rate"], points=[dict(lr=1e-2, drop_rate=0.3)], seed=0, cpus_per_trial=2,
                  gpus_per_trial=0.0, searcher="tpe", scheduler="asha", revalidate_top=0, revalidate_folds=[],
                  study=None, base={"epochs": 3, "batch_size": 16, "lr": 3e-4, "drop_rate": 0.3})


def test_rungs_are_where_asha_compares_trials():
    assert report.rungs(3, 1, 2) == [1, 2]
    assert report.rungs(8, 1, 4) == [1, 4]
    assert report.rungs(30, 2, 3) == [2, 6, 18]
    assert report.rungs(3, 1, 2, scheduler="none") == []


def test_cost_counts_trial_epochs_and_device_hours_against_full_length():
    table = pd.DataFrame(dict(trial_id=["a", "b"], epochs=[1, 3], wall_s=[36.0, 108.0]))
    c = report.cost(table, 3, cpus_per_trial=2, gpus_per_trial=0)
    assert (c["unit"], c["trial_epochs"], c["full_epochs"]) == ("CPU", 4, 6)
    assert c["hours"] == pytest.approx(144 * 2 / 3600)  # 2 CPUs per trial
    assert c["full_hours"] == pytest.approx(c["hours"] / 4 * 6) and c["saved"] == pytest.approx(1 / 3)
    assert report.cost(table, 3, cpus_per_trial=1, gpus_per_trial=0.25)["unit"] == "GPU"


def test_the_best_config_is_compared_with_its_own_spaces_starting_point():
    assert report.reference(spaces.get("finetune"))[0] == "notebook"
    name, values = report.reference(spaces.get("smoke"))
    assert name == "first trial" and values["lr"] == 1e-2 and values["drop_rate"] == 0.3  # smoke's, not the notebook's
    table = pd.DataFrame(dict(trial_id=["a"], trial_index=[0], status=["completed"], epochs=[3], best_cmap=[0.9],
                              lr=[0.005], drop_rate=[0.1], wall_s=[10.0]))
    out = Outcome("/tmp/x", SPEC, table, pd.DataFrame(columns=["trial_index", "trial_id", "epoch", "cmap"]),
                  pd.DataFrame(columns=["target", "param", "importance", "trials", "evaluator"]), None, None,
                  Best("a", 0, dict(lr=0.005, drop_rate=0.1), dict(trial_index=0, trial_id="a", best_cmap=0.9), None))
    page = report.render(out)["report.html"].decode()
    assert "<th>first trial</th>" in page and "<th>notebook</th>" not in page
    assert "<td>lr</td><td>0.005</td><td>0.01</td><td>yes</td>" in page
    assert "trial 0 (Ray trial a)" in page


def test_a_search_without_results_still_gets_a_page(recwarn):
    empty = pd.DataFrame(columns=["trial_id", "trial_index", "status"])
    out = report.render(Outcome("/tmp/none", SPEC, empty, pd.DataFrame(columns=["trial_index", "trial_id", "epoch", "cmap"]),
                                pd.DataFrame(columns=["target", "param", "importance", "trials", "evaluator"]),
                                None, None, None))
    assert set(out) == {"report.html", *report.PLOTS}
    assert all(out[p][:8] == b"\x89PNG\r\n\x1a\n" for p in report.PLOTS)
    assert b"no trial has a result yet" in out["report.html"] and not recwarn.list


def test_grace_period_rises_to_a_fraction_of_long_searches():
    """birdtune's first rung: the space's grace period, at least 1/27 of max_t (LCBench's 52 epochs -> 2)."""
    from search import layout

    assert layout.grace_period(1, 8) == 1 and layout.grace_period(2, 30) == 2
    assert layout.grace_period(1, 52) == 2 and layout.grace_period(1, 100) == 4 and layout.grace_period(1, 27) == 1
    assert layout.grace_period(5, 3) == 3  # never past max_t
    assert layout.asha_rungs(52, 2, 4) == [2, 8, 32, 52] and layout.asha_rungs(8, 1, 4) == [1, 4, 8]


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
