"""search.summary: the lines a search ends with, from an Outcome (the searches in test_search print real ones)."""
import numpy as np
import pandas as pd

from helpers import smoke_spec
from search import layout
from search.budget import Spent
from search.summary import print_summary
from search.tables import Best, Outcome


def outcome(tmp_path, **kw) -> Outcome:
    table = pd.DataFrame(dict(trial_id=["a", "b", "c"], trial_index=[0, 1, 2], epochs=[3, 1, 1],
                              status=[layout.COMPLETED, layout.STOPPED_EARLY, layout.ERRORED],
                              best_cmap=[0.61, 0.42, np.nan], lr=[0.01, 0.1, 0.2], drop_rate=[0.3, 0.1, 0.2],
                              wall_s=[3.0, 1.0, 0.5], error=["", "", "RuntimeError: out of memory"]))
    best = Best("a", 0, {"lr": 0.01, "drop_rate": 0.3}, {"trial_index": 0}, None)
    spec = smoke_spec(num_samples=None, epoch_budget=5, spectrogram={"sr": 32000})
    return Outcome(str(tmp_path / "e"), spec, table, pd.DataFrame(), pd.DataFrame(), None, None, best,
                   trust=[{"advice": "epoch-1 ranks held"}], spent=Spent(epochs=5), budget_ended=True, **kw)


def test_the_summary_says_what_ran_what_it_cost_the_best_and_where_its_files_are(tmp_path, capsys):
    print_summary(outcome(tmp_path), 42.4)
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:4] == ["0", "completed", "3", "0.61"]  # the table, best first
    assert "trial 2 errored: RuntimeError: out of memory" in lines
    assert "3 trials (1 completed, 1 stopped_early, 1 errored); 5 trial-epochs of at most 9; 42 s" in lines
    assert "budget: 5 trial-epochs; spent 5 of 5 trial-epochs (the budget ended the search)" in lines
    assert "best: trial 0 cmap 0.6100 with lr=0.01, drop_rate=0.3" in lines
    exported = next(line for line in lines if line.startswith("exported: "))
    assert f"python -m core.train --config {tmp_path}/e/best/config.yaml" in exported
    assert f"python -m core.predict --model {tmp_path}/e/best --audio" in exported  # data made from audio
    assert lines[-2:] == ["early stopping: epoch-1 ranks held", f"report: {tmp_path}/e/report.html"]


def test_the_summary_counts_the_trials_that_went_on_from_their_checkpoints(tmp_path, capsys):
    from search import journal

    events = [{"event": "result", "trial_id": t, "epoch": e, "cmap": 0.5, "done": d}
              for t, e, d in [("a", 1, True), ("b", 1, True), ("a", 2, False), ("a", 3, True), ("c", 1, False),
                              ("c", 1, False)]]  # a paused and promoted; b stopped; c restarted (not ended)
    assert journal.continued(events) == 1
    print_summary(outcome(tmp_path, continued=1), 42.4)
    assert ("3 trials (1 completed, 1 stopped_early, 1 errored), 1 of them continued from its checkpoint after "
            "it had ended; 5 trial-epochs of at most 9; 42 s") in capsys.readouterr().out.splitlines()
