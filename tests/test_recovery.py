"""search.recovery's parts on their own, with Ray's real trial objects (the chaos and fault tests run it whole)."""
import json
from types import SimpleNamespace

import pytest

from search import journal, recovery


def test_a_search_stopped_before_ray_saved_a_state_starts_over_keeping_its_spec(tmp_path):
    exp = tmp_path / "e"
    exp.mkdir()
    for name in ("search.yaml", "tuner.pkl", "optuna.db", "results_log.jsonl", "cut_trials.txt", "notes.txt",
                 "search_gen_state-2026.pkl", ".tmp_upload"):
        (exp / name).write_text("x")
    (exp / "train_trial_abc_1").mkdir()
    study = tmp_path / "elsewhere.db"
    study.write_text("x")
    log = exp / "results_log.jsonl"
    assert recovery.reconcile(str(exp), str(log)) is None  # tuner.pkl alone is no saved state
    recovery.start_over(str(exp), str(log), str(study))
    assert sorted(p.name for p in exp.iterdir()) == ["notes.txt", "search.yaml"] and not study.exists()


def test_a_journal_with_trials_but_no_saved_state_is_an_error_not_a_fresh_start(tmp_path):
    log = tmp_path / "results_log.jsonl"
    journal.append(str(log), {"event": journal.START, "trial_id": "a", "trial": ["{}", None]})
    with pytest.raises(RuntimeError, match="saved state is missing"):
        recovery.reconcile(str(tmp_path), str(log))


def test_result_files_missing_the_last_results_are_rewritten_from_the_journal(tmp_path):
    folder = tmp_path / "train_trial_a"
    folder.mkdir()
    rows = [{"epoch": e, "cmap": 0.1 * e, "training_iteration": e, "config": {"lr": 0.01}} for e in (1, 2, 3)]
    (folder / "result.json").write_text(json.dumps(rows[0]) + "\n" + '{"epoch": 2, "cm')  # cut off by a kill
    trial = SimpleNamespace(storage=SimpleNamespace(trial_dir_name="train_trial_a"))
    assert recovery._complete_result_files(str(tmp_path), trial, rows) == 2
    assert [json.loads(x)["epoch"] for x in (folder / "result.json").read_text().splitlines()] == [1, 2, 3]
    lines = (folder / "progress.csv").read_text().splitlines()
    assert lines[0] == "epoch,cmap,training_iteration" and len(lines) == 4  # config left out, as Ray's logger
    assert recovery._complete_result_files(str(tmp_path), trial, rows) == 0  # whole already: untouched


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
