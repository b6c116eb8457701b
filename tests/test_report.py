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
