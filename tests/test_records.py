"""search.records' callbacks on their own, with stand-in trials (the searches in test_search, test_faults and
test_s3 run them for real)."""
from types import SimpleNamespace

from search.records import CutTrials, StorageWatch


def trial(trial_id):
    return SimpleNamespace(trial_id=trial_id)


def test_the_trials_a_search_ends_around_are_recorded_and_leave_the_record_when_resumed(tmp_path):
    exp = str(tmp_path)
    first = CutTrials(exp, StorageWatch(exp))
    for t in "abc":
        first.on_trial_start(0, [], trial(t))
    first.on_trial_complete(0, [], trial("a"))
    first.on_trial_error(0, [], trial("b"))
    first.on_experiment_end([])  # Ctrl-C with c running
    assert (tmp_path / "cut_trials.txt").read_text().split() == ["c"]

    resumed = CutTrials(exp, StorageWatch(exp))
    resumed.on_trial_start(0, [], trial("d"))
    assert (tmp_path / "cut_trials.txt").read_text().split() == ["c"]
    resumed.on_trial_start(0, [], trial("c"))  # Ray restarts c: whatever it becomes now is its own
    assert (tmp_path / "cut_trials.txt").read_text().split() == []  # at once: a killed driver writes nothing later
    resumed.on_trial_complete(0, [], trial("c"))
    resumed.on_experiment_end([])  # a second stop with d running
    assert (tmp_path / "cut_trials.txt").read_text().split() == ["d"]


def test_nothing_is_written_once_the_storage_is_known_to_be_gone(tmp_path):
    exp = str(tmp_path)
    watch = StorageWatch(exp)
    cut = CutTrials(exp, watch)
    cut.on_trial_start(0, [], trial("a"))
    watch.down = True
    cut.on_experiment_end([])
    assert not (tmp_path / "cut_trials.txt").exists()
