"""search.tuning: the journal of each Tuner, the budget as Ray's Stopper, the callbacks a search's RunConfig
carries, and the wait for the last state upload before Ray rewrites its files."""
from search import tuning


def test_the_state_upload_finishes_before_ray_rewrites_the_state_files(tmp_path):
    """search.tuning.upload_before_rewrite: Ray's experiment state manager waits for its running upload
    before save_fn rewrites the staging files (the overlap made an upload fail with a copy_files error)."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager as Manager

    from search.tuning import upload_before_rewrite

    upload_before_rewrite()
    upload_before_rewrite()  # idempotent
    events = []

    class Syncer:
        def wait(self):
            events.append("upload finished")

        def sync_up(self, *a, **k):
            events.append("upload started")
            return True

    storage = type("Storage", (), {"syncer": Syncer(), "experiment_driver_staging_path": str(tmp_path),
                                   "experiment_fs_path": str(tmp_path)})()
    manager = Manager(storage=storage, checkpoint_period="auto")
    manager.sync_up_experiment_state(lambda: events.append("state rewritten"), force=True)
    assert events.index("upload finished") < events.index("state rewritten") < events.index("upload started")


def plan_at(storage_path: str, **spec_changes):
    from helpers import smoke_spec
    from search.spec import Plan, RunOptions

    options = RunOptions(name="e", storage_path=storage_path, storage_arg=storage_path, address=None, resume=False,
                         max_failures=3, concurrency=None, dashboard=False, dashboard_host="127.0.0.1", verbose=False)
    local = storage_path.startswith("/")
    journal = f"{storage_path}/e/results_log.jsonl" if local else "/work/results/e/results_log.jsonl"
    import dataclasses

    return Plan(smoke_spec(**spec_changes), dataclasses.replace(options, journal=journal), space=None, data=None)


def test_each_tuner_has_its_journal_beside_the_searchs(tmp_path):
    local = plan_at(str(tmp_path))
    assert tuning.journal_path(local, "e") == f"{tmp_path}/e/results_log.jsonl"
    assert tuning.journal_path(local, "revalidate") == f"{tmp_path}/e/revalidate/results_log.jsonl"
    bucket = plan_at("s3://b/runs")  # the journal stays on the driver's machine, the re-validation's beside it
    assert tuning.journal_path(bucket, "e") == "/work/results/e/results_log.jsonl"
    assert tuning.journal_path(bucket, "revalidate") == "/work/results/e/revalidate/results_log.jsonl"


def test_the_budget_is_rays_stopper_and_the_run_config_carries_the_records(tmp_path):
    from search.budget import Budget, Meter, Spent
    from search.cluster import Cluster
    from search.cut_trials import CutTrials
    from search.journal import Journal
    from search.progress import LiveView
    from search.recovery import RepairCheckpoints
    from search.watch import StorageWatch

    plan = plan_at(str(tmp_path), epoch_budget=2)
    meter = tuning.meter(plan)
    assert isinstance(meter, Meter) and meter.before == Spent() and tuning.meter(plan_at(str(tmp_path))) is None
    stop = tuning.BudgetStop(meter)
    assert not stop("a", {"epoch": 1, "training_iteration": 1}) and not stop.stop_all()
    assert stop("a", {"epoch": 2, "training_iteration": 2}) is False and stop.stop_all()  # 2 epochs spent: the end
    lost = []
    config = tuning.run_config(plan, Cluster(None, 2, True), "e", str(tmp_path), None, stop=Meter(Budget(epochs=2), Spent()),
                               on_lost=lost.append)
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    kinds = [type(c) for c in config.callbacks]
    assert kinds == [LiveView, StorageWatch, CutTrials, RepairCheckpoints, Journal, CSVLoggerCallback, JsonLoggerCallback]
    assert config.callbacks[1].on_lost == lost.append and isinstance(config.stop, tuning.BudgetStop)
    assert config.checkpoint_config.num_to_keep == tuning.KEEP_CHECKPOINTS and config.failure_config.max_failures == 3
