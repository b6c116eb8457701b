"""search.cut_trials on its own, with stand-in trials (the searches in test_search, test_faults and test_s3
run it for real)."""
from types import SimpleNamespace

from search.cut_trials import CutTrials
from search.watch import StorageWatch


def trial(trial_id, status="RUNNING", last_result=None):
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=last_result or {})


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


def test_a_trial_the_search_ends_while_it_waits_for_its_worker_is_cut_too(tmp_path):
    # a --time-budget spent while the first trial's worker still starts (seen on a loaded machine): Ray
    # ends it TERMINATED with no result and no on_trial_start ever came; it is unfinished, not stopped early
    exp = str(tmp_path)
    cut = CutTrials(exp, StorageWatch(exp))
    done, failed = trial("a", "TERMINATED", {"epoch": 3}), trial("b", "ERROR")
    for t in (done, failed):
        cut.on_trial_start(0, [], t)
    cut.on_trial_complete(0, [], done)
    cut.on_trial_error(0, [], failed)
    cut.on_experiment_end([done, failed, trial("w", "TERMINATED", {"trial_id": "w"})])  # (Ray's own key only)
    assert (tmp_path / "cut_trials.txt").read_text().split() == ["w"]


def test_nothing_is_written_once_the_storage_is_known_to_be_gone(tmp_path):
    exp = str(tmp_path)
    watch = StorageWatch(exp)
    cut = CutTrials(exp, watch)
    cut.on_trial_start(0, [], trial("a"))
    watch.down = True
    cut.on_experiment_end([])
    assert not (tmp_path / "cut_trials.txt").exists()


def test_a_restart_while_the_storage_does_not_answer_keeps_rays_choice_without_a_traceback(tmp_path):
    from search.recovery import RepairCheckpoints

    class Silent:
        def get_file_info(self, *a, **kw):
            raise OSError("When getting information for key 'x': AWS Error NETWORK_CONNECTION")

        create_dir = open_output_stream = get_file_info

    checkpoint = SimpleNamespace(path="b/t/checkpoint_000001", filesystem=Silent())
    manager = SimpleNamespace(_checkpoint_results=[SimpleNamespace(checkpoint=checkpoint)],
                              _latest_checkpoint_result="ray's")
    (tmp_path / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')  # the driver's copy, to upload first
    trial = SimpleNamespace(trial_id="t", checkpoint=checkpoint, local_path=str(tmp_path),
                            storage=SimpleNamespace(storage_filesystem=Silent(), trial_fs_path="b/t"),
                            run_metadata=SimpleNamespace(checkpoint_manager=manager,
                                                         last_result={"epoch": 2, "checkpoint_dir_name": "checkpoint_000002"}))
    RepairCheckpoints().on_trial_recover(0, [trial], trial)  # no exception
    assert manager._latest_checkpoint_result == "ray's" and len(manager._checkpoint_results) == 1
