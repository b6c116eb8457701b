"""search.journal on its own, with stand-in trials: what it writes, how a cut-off line is read, and what it says
ended (test_faults.py's stopped searches and tests/bench/chaos.py use it for real)."""
import json
from types import SimpleNamespace

from search import internals, journal
from search.journal import Journal
from search.watch import StorageWatch


def trial(trial_id):
    state = json.dumps({"trial_id": trial_id})
    return SimpleNamespace(trial_id=trial_id, status="RUNNING", get_json_state=lambda: (state, "{}"))


def saved_state(folder):
    """Ray's first saved state, as the first trial start waits for it."""
    (folder / f"{internals.STATE_PREFIX}s.json").write_text("{}")
    (folder / f"{internals.GENERATOR_PREFIX}s.json").write_bytes(b"")
    (folder / f"{internals.SEARCHER_PREFIX}s.pkl").write_bytes(b"")


def test_every_start_result_and_end_is_a_line_in_the_drivers_order(tmp_path):
    saved_state(tmp_path)
    path = tmp_path / "results_log.jsonl"
    j = Journal(str(path), str(tmp_path), StorageWatch(str(tmp_path)))
    a, b = trial("a"), trial("b")
    j.on_trial_start(0, [], a)
    j.on_trial_result(0, [], a, {"epoch": 1, "cmap": 0.5, "status": "ok", "done": False, "lr": 0.1})
    j.on_trial_start(0, [], b)
    j.on_trial_start(0, [], a)  # restarted from a checkpoint: started once
    j.on_trial_result(0, [], a, {"epoch": 2, "cmap": 0.6, "status": "ok", "done": True})
    j.on_trial_complete(0, [], a)
    j.on_trial_error(0, [], b)
    events = journal.read(str(path))
    assert [(e["event"], e["trial_id"]) for e in events] == [
        ("start", "a"), ("result", "a"), ("start", "b"), ("result", "a"), ("end", "a"), ("end", "b")]
    assert events[0]["trial"] == [json.dumps({"trial_id": "a"}), "{}"]  # Ray's state of the trial, to add it back
    assert events[1]["row"]["lr"] == 0.1 and events[1]["done"] is False  # the whole result, as result.json has it
    assert [(e["trial_id"], e["epoch"], e["cmap"]) for e in journal.results(events)] == [("a", 1, 0.5), ("a", 2, 0.6)]
    assert journal.ended(events) == {"a": "TERMINATED", "b": "ERROR"}
    # a second driver (--resume) goes on with the same file and does not start a known trial again
    again = Journal(str(path), str(tmp_path), StorageWatch(str(tmp_path)))
    again.on_trial_start(0, [], a)
    assert len(journal.read(str(path))) == 6


def test_a_line_cut_off_by_a_kill_is_left_out_and_the_next_starts_on_its_own(tmp_path):
    saved_state(tmp_path)
    path = tmp_path / "results_log.jsonl"
    whole = json.dumps({"event": "result", "trial_id": "a", "epoch": 1, "cmap": 0.5, "done": False})
    path.write_text(whole + "\n" + whole[:20])  # killed halfway through the second line
    assert len(journal.read(str(path))) == 1
    Journal(str(path), str(tmp_path), StorageWatch(str(tmp_path))).on_trial_complete(0, [], trial("a"))
    events = journal.read(str(path))
    assert [e["event"] for e in events] == ["result", "end"] and path.read_text().count("\n") == 3


def test_what_ended_and_what_goes_on(tmp_path):
    r = lambda t, done: {"event": "result", "trial_id": t, "epoch": 1, "cmap": 0.1, "done": done}  # noqa: E731
    events = [r("a", False), r("a", True),  # ASHA stopped a: ended before Ray heard back from the trial
              r("b", False), {"event": "end", "trial_id": "b", "status": "ERROR"},
              r("b", False),  # an errored trial restarted by a --resume: running again
              r("c", False)]
    assert journal.ended(events) == {"a": "TERMINATED"}
    # lines written before the journal had events are results
    old = tmp_path / "results_log.jsonl"
    old.write_text(json.dumps({"trial_id": "d", "epoch": 1, "cmap": 0.2, "status": "ok"}) + "\n")
    assert [(e["trial_id"], e["epoch"]) for e in journal.results(journal.read(str(old)))] == [("d", 1)]
