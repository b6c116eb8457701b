"""search.watch on its own: the background uploads, a failed probe ending the search, nothing written once the
storage is known to be gone, and what Ray pickles of it (the S3 tests run it against a real outage)."""
import pickle

import pytest

from search import storage
from search.watch import StorageDown, StorageWatch


def test_uploads_run_in_the_background_and_the_newest_text_wins(tmp_path):
    watch = StorageWatch(str(tmp_path))
    path = str(tmp_path / "cut_trials.txt")
    for text in ("a\n", "a\nb\n"):
        watch.upload(path, text)
    assert watch.flush(timeout=10)
    assert (tmp_path / "cut_trials.txt").read_text() == "a\nb\n"


def test_a_failed_probe_when_a_trial_fails_ends_the_search_and_stops_the_uploads(tmp_path, monkeypatch):
    watch = StorageWatch(str(tmp_path))
    watch.on_trial_error(0, [], None)  # the storage answers: the trial's own failure, Ray retries it
    assert not watch.down
    monkeypatch.setattr(storage, "check_writable", lambda path: "no answer in 20 s")
    with pytest.raises(StorageDown, match="no answer in 20 s"):
        watch.on_trial_recover(0, [], None)
    assert watch.down
    watch.upload(str(tmp_path / "late.txt"), "x")
    assert not watch.flush(timeout=1) and not (tmp_path / "late.txt").exists()


def test_ray_pickles_the_settings_not_the_threads_or_the_last_resort(tmp_path):
    watch = StorageWatch(str(tmp_path), every_s=5, on_lost=print)
    watch.upload(str(tmp_path / "x.txt"), "x")  # starts the upload thread
    copy = pickle.loads(pickle.dumps(watch))
    assert (copy.exp, copy.every_s, copy.on_lost, copy.down) == (str(tmp_path), 5, None, False)
