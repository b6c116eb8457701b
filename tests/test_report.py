"""report.html pieces: ASHA rungs, the cost figures and a page for an experiment with no results yet."""
import pandas as pd
import pytest

from search import report

META = dict(space="smoke", searched=["lr", "drop_rate"], metric="cmap", max_t=3, grace_period=1,
            reduction_factor=2, scheduler="asha", searcher="tpe", cpus_per_trial=2, gpus_per_trial=0)


def test_rungs_are_where_asha_compares_trials():
    assert report.rungs(META) == [1, 2]
    assert report.rungs({**META, "max_t": 8, "reduction_factor": 4}) == [1, 4]
    assert report.rungs({**META, "max_t": 30, "grace_period": 2, "reduction_factor": 3}) == [2, 6, 18]
    assert report.rungs({**META, "scheduler": "none"}) == []


def test_cost_counts_trial_epochs_and_device_hours_against_full_length():
    table = pd.DataFrame(dict(trial_id=["a", "b"], epochs=[1, 3], wall_s=[36.0, 108.0]))
    c = report.cost(table, pd.DataFrame(), META)
    assert (c["unit"], c["trial_epochs"], c["full_epochs"]) == ("CPU", 4, 6)
    assert c["hours"] == pytest.approx(144 * 2 / 3600)  # 2 CPUs per trial
    assert c["full_hours"] == pytest.approx(c["hours"] / 4 * 6) and c["saved"] == pytest.approx(1 / 3)
    assert report.cost(table, pd.DataFrame(), {**META, "gpus_per_trial": 0.25})["unit"] == "GPU"


def test_a_search_without_results_still_gets_a_page(recwarn):
    empty = pd.DataFrame(columns=["trial_id", "trial_index", "status"])
    out = report.build("/tmp/none", META, empty, pd.DataFrame(columns=["trial_index", "trial_id", "epoch", "cmap"]),
                       pd.DataFrame(columns=["target", "param", "importance", "trials", "evaluator"]), None, None)
    assert set(out) == {"report.html", *report.PLOTS}
    assert all(out[p][:8] == b"\x89PNG\r\n\x1a\n" for p in report.PLOTS)
    assert b"no trial has a result yet" in out["report.html"] and not recwarn.list
