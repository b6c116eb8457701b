"""search.records' callbacks and search.recovery's RepairCheckpoints on their own, with stand-in trials (the
searches in test_search, test_faults and test_s3 run them for real)."""
from types import SimpleNamespace

import pytest

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


@pytest.mark.slow
def test_a_trial_whose_worker_died_between_its_result_and_ray_registering_the_checkpoint_runs_no_epoch_twice(tmp_path):
    """Ray records a result, then registers its checkpoint in a second call to the trial: a worker that dies
    in between (here killed as epoch 2's result is recorded) is restarted from epoch 1's checkpoint, and
    epoch 2 ran twice. RepairCheckpoints restores it from the checkpoint epoch 2's result names."""
    import os
    import signal

    import pandas as pd
    import ray
    from ray import tune

    from search.recovery import RepairCheckpoints

    def counting(config):  # defined here: Ray ships it by value (the workers cannot import tests/)
        """Reports epochs 1-4 with a checkpoint each, continuing after the checkpoint it is restored from."""
        import os
        import tempfile

        from ray import tune

        start = 0
        if tune.get_checkpoint():
            with tune.get_checkpoint().as_directory() as d:
                start = int(open(os.path.join(d, "epoch")).read())
        for epoch in range(start + 1, 5):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "epoch"), "w") as fh:
                    fh.write(str(epoch))
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(d))

    class KillAtEpoch2(tune.Callback):
        def __init__(self):
            self.done = False

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result["epoch"] == 2 and not self.done:
                self.done = True
                # its process killed before Ray asks the trial for its checkpoint (ray.kill is asynchronous:
                # the trial could still answer that call, and the race would not happen)
                os.kill(result["pid"], signal.SIGKILL)

    def epochs(repair: bool) -> list[int]:
        callbacks = [KillAtEpoch2()] + ([RepairCheckpoints()] if repair else [])
        run = tune.RunConfig(name=f"r{int(repair)}", storage_path=str(tmp_path), verbose=0, callbacks=callbacks,
                             failure_config=tune.FailureConfig(max_failures=1))
        [result] = tune.Tuner(counting, run_config=run).fit()
        assert not result.error and callbacks[0].done
        return pd.read_json(f"{result.path}/result.json", lines=True)["epoch"].tolist()

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert epochs(repair=False) == [1, 2, 2, 3, 4]  # Ray alone: the race this callback repairs
        assert epochs(repair=True) == [1, 2, 3, 4]
    finally:
        ray.shutdown()


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
