"""search.budget on its own: durations, what a search's journal says it spent, when a new trial may start and
when the search ends (test_search.py runs an --epoch-budget and a --time-budget search for real)."""
import pickle

import pytest

from search.budget import Budget, Meter, Spent, duration, owed, parse_duration


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("45s", 45), ("3600", 3600), ("1.5h", 5400),
                                          (" 2H ", 7200), ("1d", 86400), (".5m", 30)])
def test_durations_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "0m", "-5m", "2 hours", "h", ""])
def test_anything_else_is_refused_naming_it(text):
    with pytest.raises(ValueError, match=f"--time-budget {text}: give a duration above 0"):
        parse_duration(text)


def test_durations_print_short():
    assert [duration(s) for s in (3600, 5400, 90, 0.4, 45)] == ["1h", "1h30m", "1m30s", "0s", "45s"]
    assert Budget(epochs=64).describe() == "64 trial-epochs" and not Budget()
    assert Budget(epochs=8, seconds=7200).describe() == "8 trial-epochs or 2h of search time"


def test_what_earlier_runs_spent_comes_from_the_journal():
    r = lambda t: {"event": "result", "trial_id": "a", "epoch": 1, "t": t}  # noqa: E731
    events = [{"event": "start", "t": 100.0}, r(101.0), r(103.0),  # a run killed after 3 s: its events' span
              {"event": "resume"},
              {"event": "start", "t": 500.0}, r(504.0), {"event": "run", "seconds": 9.5, "t": 505.0},  # its meter's count
              {"event": "resume"}]
    spent = Spent.from_journal(events)
    assert spent.epochs == 3 and spent.seconds == pytest.approx(3.0 + 9.5)
    assert Spent.from_journal([]) == Spent(0, 0.0)
    assert spent.describe(Budget(epochs=10, seconds=60)) == "3 of 10 trial-epochs, 12s of 1m"


def test_a_new_trial_starts_while_the_running_trials_next_rungs_and_its_own_first_fit():
    rungs = [1, 4, 16]
    assert owed([0, 1, 3, 16], rungs) == 1 + 3 + 1 + 0  # to rung 1, to 4, to 4, none past the last
    m = Meter(Budget(epochs=20), Spent(epochs=10))
    assert m.allows(owed=8, first_rung=1) and m.allows(owed=9, first_rung=1)
    assert not m.allows(owed=10, first_rung=1)  # 10 + 10 + 1 > 20
    for i in range(10):
        assert not m.stop_all()
        m(f"t{i}", {"epoch": 1})
    assert m.stop_all() and m.exhausted() and not m.allows(owed=0, first_rung=1)  # 20 spent: the search ends


def test_a_time_budget_ends_the_search_and_holds_back_a_trial_whose_first_rung_would_not_fit(monkeypatch):
    import search.budget as budget

    now = [1000.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: now[0])
    m = Meter(Budget(seconds=100), Spent(seconds=30))  # 70 s left
    m.start()
    m("a", {"epoch": 1, "time_this_iter_s": 10.0})
    now[0] += 50  # 80 s spent
    assert m.allows(owed=0, first_rung=2) and not m.allows(owed=0, first_rung=3)  # 80 + 2 x 10 <= 100 < 80 + 30
    now[0] += 20
    assert m.stop_all() and m.seconds() == pytest.approx(100) and m.this_run() == pytest.approx(70)
    now[0] += 3  # Ray stopping the trials (a worker still starting) after the budget ended the search
    assert m.stop_all() and m.seconds() == pytest.approx(100) and m.spent().seconds == pytest.approx(100)
    restored = pickle.loads(pickle.dumps(m))  # a resumed run's clock starts again
    assert restored.this_run() == 0.0 and restored._stopped_at is None
