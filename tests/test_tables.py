"""search.tables from stand-in trials and tables: each trial's status and outcome, which trials are usable,
the table as text, and what the Outcome says about a search (the searches in test_search build them from Ray)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd

from helpers import smoke_spec
from search import layout, tables
from search.tables import Outcome


def test_a_trials_status_comes_from_rays_and_what_it_reported():
    assert tables.trial_status("TERMINATED", 3, 3, False) == layout.COMPLETED
    assert tables.trial_status("TERMINATED", 1, 3, False) == layout.STOPPED_EARLY
    assert tables.trial_status("TERMINATED", 3, 3, True) == layout.DIVERGED
    assert tables.trial_status("ERROR", 3, 3, True) == layout.ERRORED
    assert tables.trial_status("RUNNING", 2, 3, False) == tables.trial_status("PENDING", 0, 3, False) == layout.UNFINISHED


def test_a_trials_outcome_is_its_best_epoch():
    rows = pd.DataFrame(dict(epoch=[1, 2, 3], cmap=[0.2, 0.5, 0.4], status=["ok", "ok", "ok"]))
    out = tables.trial_outcome(SimpleNamespace(status="TERMINATED"), rows, "cmap", 3)
    assert out == dict(best_cmap=0.5, epochs=3, status=layout.COMPLETED)
    none = tables.trial_outcome(SimpleNamespace(status="PENDING"), pd.DataFrame(), "cmap", 3)
    assert np.isnan(none["best_cmap"]) and (none["epochs"], none["status"]) == (0, layout.UNFINISHED)
    assert tables.trial_number(SimpleNamespace(experiment_tag="12_lr=0.01")) == 12
    assert tables.trial_number(SimpleNamespace(experiment_tag="lr=0.01")) is None
    assert type(tables.py(np.float32(0.5))) is float and tables.py("x") == "x"


def table() -> pd.DataFrame:
    return pd.DataFrame(dict(trial_id=list("abcdef"), trial_index=range(6), epochs=[3, 1, 2, 3, 0, 1],
                             status=[layout.COMPLETED, layout.STOPPED_EARLY, layout.ERRORED, layout.DIVERGED,
                                     layout.UNFINISHED, layout.STOPPED_EARLY],
                             best_cmap=[0.6, 0.7, 0.9, 0.95, np.nan, np.nan], lr=[0.1] * 6, drop_rate=[0.2] * 6,
                             wall_s=[1.0] * 6))


def test_usable_trials_are_completed_or_stopped_early_with_a_score():
    assert tables.usable(table())["trial_id"].tolist() == ["a", "b"]
    assert tables.usable(pd.DataFrame()).empty


def test_the_table_as_text_puts_the_best_first():
    text = tables.format_table(table(), ["lr", "drop_rate"], limit=3).splitlines()
    assert text[0].split() == ["trial_index", "status", "epochs", "best_cmap", "lr", "drop_rate", "wall_s"]
    assert [line.split()[0] for line in text[1:]] == ["3", "2", "1"]  # scores, whatever the status
    assert tables.format_table(pd.DataFrame(), []) == "(no trials)"


def outcome(t: pd.DataFrame, **kw) -> Outcome:
    return Outcome("exp", smoke_spec(num_samples=6), t, pd.DataFrame(), pd.DataFrame(), None, None, None, **kw)


def test_what_the_outcome_says_about_the_search():
    out = outcome(table(), cut=frozenset({"e"}))
    assert out.trial_epochs == 10 and out.counts[layout.STOPPED_EARLY] == 2
    assert not out.resumable  # six of six started; e was cut (Ray ended it), not waiting
    assert outcome(table()).resumable  # e unfinished and not cut: Ray restarts it
    assert outcome(table().head(4)).resumable  # trials not yet created
    assert not outcome(table().head(4), budget_ended=True).resumable
