"""search.report: the cost figures, what the best config is compared with, a page for an experiment with no
results yet, and the report of a finished search as Chromium renders it."""
import dataclasses

import pandas as pd
import pytest

import spaces
from helpers import read_table, smoke_spec
from search import report
from search.tables import Best, Outcome

SPEC = smoke_spec()


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
    assert "1 trials of up to 3 epochs (1 completed); written" in page  # none went on after it had ended
    assert "<th>first trial</th>" in page and "<th>notebook</th>" not in page
    assert "<td>lr</td><td>0.005</td><td>0.01</td><td>yes</td>" in page
    assert "trial 0 (Ray trial a)" in page
    again = report.render(dataclasses.replace(out, continued=1))["report.html"].decode()  # ASHA promoted it later
    assert "(1 completed), 1 of them continued from its checkpoint after it had ended; written" in again


def test_a_search_without_results_still_gets_a_page(recwarn):
    empty = pd.DataFrame(columns=["trial_id", "trial_index", "status"])
    out = report.render(Outcome("/tmp/none", SPEC, empty, pd.DataFrame(columns=["trial_index", "trial_id", "epoch", "cmap"]),
                                pd.DataFrame(columns=["target", "param", "importance", "trials", "evaluator"]),
                                None, None, None))
    assert set(out) == {"report.html", *report.PLOTS}
    assert all(out[p][:8] == b"\x89PNG\r\n\x1a\n" for p in report.PLOTS)
    assert b"no trial has a result yet" in out["report.html"] and not recwarn.list


def test_at_a_thousand_trials_the_best_five_stand_out_and_the_rest_are_faint(monkeypatch):
    """The learning-curve plot of 1,000 trials: every curve drawn, the rest thin and faint, the best five (by
    best cmAP, never a diverged one) on top in their own colours and named in the legend."""
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    n = 1000
    ids = [f"t{i}" for i in range(n)]
    best = rng.uniform(0.3, 0.8, n)
    best[[17, 400, 999]] = [0.97, 0.95, 0.93]
    status = np.where(np.arange(n) % 3 == 0, "completed", "stopped_early").astype(object)
    status[5] = "diverged"
    best[5] = 0.99  # a diverged trial's score never stands out
    table = pd.DataFrame(dict(trial_id=ids, trial_index=range(n), status=status, best_cmap=best,
                              lr=rng.uniform(1e-3, 1e-1, n), drop_rate=rng.uniform(0, 0.5, n)))
    curves = pd.DataFrame([dict(trial_id=t, epoch=e, cmap=b * e / 3) for t, b in zip(ids, best) for e in (1, 2, 3)])
    drawn = []
    monkeypatch.setattr(report, "_png", lambda fig: drawn.append(fig) or b"")
    report.curves_plot(table, curves, 3, [1])
    lines = [ln for ln in drawn[0].axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == n
    top = report.highlighted(table)
    assert top[:3] == ["t17", "t400", "t999"] and "t5" not in top and len(top) == 5
    on_top = lines[-5:]
    assert [ln.get_label() for ln in on_top[:3]] == ["trial 17 (0.9700)", "trial 400 (0.9500)", "trial 999 (0.9300)"]
    assert all(ln.get_alpha() is None and ln.get_linewidth() >= 1.6 for ln in on_top)
    assert all(ln.get_alpha() <= 0.1 and ln.get_linewidth() < 1 for ln in lines[:-5])
    assert len({ln.get_color() for ln in on_top}) == 5 and not {ln.get_color() for ln in on_top} & set(report.COLORS.values())
    plt.close("all")


@pytest.mark.slow
def test_report_renders_offline_in_a_browser_with_every_plot(finished):
    import browser
    from search.report import PLOTS
    from search.spec import read as read_spec

    exp, r = finished
    assert f"report: {exp / 'report.html'}" in r.stdout
    html = (exp / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    for name in PLOTS:
        assert (exp / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_spec(str(exp)).rungs == [1, 2]  # smoke: grace 1, rf 2
    # whether early stopping could be trusted: one line per rung in the summary, the same in the report, and
    # what importance.rung_trust computes from the exported tables
    import html as html_lib

    from search.importance import rung_trust

    said = [ln[len("early stopping: "):] for ln in r.stdout.splitlines() if ln.startswith("early stopping: ")]
    expected = rung_trust(pd.read_parquet(exp / "trials.parquet"), read_table(exp / "curves.csv"), [1, 2],
                          read_spec(str(exp)).max_t)
    assert said == [row["advice"] for row in expected] and len(said) == 2
    assert "Could early stopping be trusted?" in html and all(html_lib.escape(s) in html for s in said)
    table = pd.read_parquet(exp / "trials.parquet")
    with browser.page(1200, 900) as page:
        page.goto((exp / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        text = page.inner_text("body")
        browser.screenshot(page, "report.png", full_page=True)
    assert sorted(alt for alt, _, _ in images) == sorted(PLOTS)
    assert all(complete and width > 300 for _, complete, width in images), images
    assert f"{len(table)} trials of up to 3 epochs" in text and "Re-validation" in text
    assert f"{int(table.epochs.sum())} trial-epochs" in text and f"{len(table) * 3} trial-epochs" in text
