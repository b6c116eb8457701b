"""The Ray Tune side of a search: the trainable with its resources, the search's Tuner (searcher + scheduler),
the re-validation's Tuner, and the RunConfig they share."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd
from ray import tune

from search import internals, layout, revalidate, storage
from search.cluster import Cluster
from search.spec import Plan
from search.trainable import TrialHooks


# checkpoints kept per trial: the newest, and the one before it, which a killed driver's experiment state
# (uploaded in the background) may still name (search.recovery)
KEEP_CHECKPOINTS = 2
# how long the driver waits for an upload of the experiment's state (Ray's default, 30 minutes, is how long
# a search whose storage stopped answering would hang at its end)
SYNC_TIMEOUT_S = float(os.environ.get("BIRDTUNE_SYNC_TIMEOUT_S", 120))  # BIRDTUNE_SYNC_TIMEOUT_S sets it


def trainable(plan: Plan, hooks: TrialHooks | None = None):
    import ray
    from ray import tune

    from search.trainable import train_trial

    spec = plan.spec
    data_node = ray.get_runtime_context().get_node_id() if plan.data.cache is not None else ""
    return tune.with_resources(
        tune.with_parameters(train_trial, data=plan.data, base=spec.base, cpus=spec.cpus_per_trial, hooks=hooks,
                             data_node=data_node, gpus=spec.gpus_per_trial),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial})


def journal_path(plan: Plan, name: str) -> str:
    """The journal of the search's Tuner (`name` is the search's) or of the re-validation's, inside it."""
    opts = plan.options
    if name == opts.name:
        return opts.journal
    if storage.is_uri(opts.exp):  # beside the search's local one
        return os.path.join(os.path.dirname(opts.journal), name, layout.RESULTS_LOG)
    return storage.join(opts.exp, name, layout.RESULTS_LOG)


def meter(plan: Plan):
    """The search's budget meter (search.budget), from what its journal says earlier runs spent; None without
    a budget."""
    from search import budget, journal

    spec = plan.spec
    if not spec.budget:
        return None
    return budget.Meter(spec.budget, budget.Spent.from_journal(journal.read(plan.options.journal)))


class BudgetStop(tune.Stopper):
    """A search.budget.Meter as Ray's Stopper: it sees every result and ends the search at the budget."""

    def __init__(self, meter):
        self.meter = meter

    def __call__(self, trial_id, result):
        return self.meter(trial_id, result)

    def stop_all(self):
        return self.meter.stop_all()


def run_config(plan: Plan, cluster: Cluster, name: str, storage_path: str, total: int | None, callbacks: tuple = (),
               stop=None, on_lost: Callable[[str], None] | None = None):
    """The RunConfig of the search's Tuner (`name` its name) or of the re-validation's; `stop` is the search's
    budget meter (search.budget.Meter), if it has one; `on_lost` ends the process when the storage stops
    answering while the search's loop is stuck in a call to it (search.watch)."""
    from ray import tune

    from search.journal import Journal
    from search.progress import LiveView
    from search.cut_trials import CutTrials
    from search.recovery import RepairCheckpoints
    from search.watch import StorageWatch

    upload_before_rewrite()
    internals.atomic_local_uploads()
    opts, spec = plan.options, plan.spec
    exp = storage.join(storage_path, name)
    if name == opts.name and opts.log_to:  # the search's trials (not the re-validation's) go to the trackers
        from search import tracking

        callbacks = tuple(callbacks) + tuple(tracking.callbacks(list(opts.log_to), opts.exp, opts.name))
    live = [] if opts.verbose else [LiveView(spec.max_t, total, spec.searched, cluster.dashboard,
                                             first_number=spec.first_trial_number, meter=stop)]
    watch = StorageWatch(exp, on_lost=on_lost)
    records = [watch, CutTrials(exp, watch), RepairCheckpoints(), Journal(journal_path(plan, name), exp, watch, meter=stop)]
    # each trial's result.json and progress.csv, as Ray's defaults write them, without the TensorBoard file Ray
    # would add where tensorboardX is installed (its flushes were a twelfth of the driver's time at hundreds
    # of trials; --log-to tensorboard asks for it)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    records += [tune.logger.CSVLoggerCallback(), tune.logger.JsonLoggerCallback()]
    return tune.RunConfig(name=name, storage_path=storage_path, stop=BudgetStop(stop) if stop is not None else None,
                          sync_config=tune.SyncConfig(sync_timeout=SYNC_TIMEOUT_S),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                          failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                          verbose=2 if opts.verbose else 0, callbacks=list(callbacks) + live + records)


def make_search(plan: Plan, n: int):
    """(search_alg, param_space, scheduler) as the spec asks, for `n` trials at a time."""
    from search.scheduler import make_scheduler
    from search.searcher import make_searcher

    spec = plan.spec
    searcher, param_space = make_searcher(spec.searcher, plan.space, max_t=spec.max_t, seed=spec.seed,
                                          study_name=plan.options.name, db_path=spec.study, concurrency=n,
                                          num_samples=spec.num_samples, grace_period=spec.grace_period,
                                          reduction_factor=spec.reduction_factor, exp=plan.options.exp,
                                          journal=plan.options.journal)
    scheduler = make_scheduler(spec.scheduler, max_t=spec.max_t, grace_period=spec.grace_period,
                               reduction_factor=spec.reduction_factor, journal=plan.options.journal,
                               num_samples=spec.num_samples, workers=n,
                               tail_fill="off" if spec.budget else spec.tail_fill)
    return searcher, param_space, scheduler


def search_tuner(plan: Plan, cluster: Cluster, make: Callable = make_search, callbacks: tuple = (),
                 hooks: TrialHooks | None = None, on_lost: Callable[[str], None] | None = None):
    """The search's Tuner, or the restored one with --resume; `make` builds its searcher and scheduler
    (the benchmarks pass a stock set-up), `callbacks` are extra Tune callbacks, `on_lost` as run_config's."""
    import optuna
    from ray import tune

    spec, opts = plan.spec, plan.options
    if not opts.verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if opts.resume:
        restored = _restored(plan, opts.name, opts.exp, opts.journal, hooks)
        if restored is not None:
            tuner, resumed = restored
            gauge = meter(plan)
            if gauge is not None:
                print(f"birdtune: budget {spec.budget.describe()}: spent {gauge.before.describe(spec.budget)} "
                      "before this run", flush=True)
            searcher, scheduler = internals.restored_search(tuner)
            if hasattr(searcher, "resume_with"):
                searcher.resume_with(journal=opts.journal, study=opts.study, known=resumed.known, meter=gauge)
            if hasattr(scheduler, "resume_with"):
                scheduler.resume_with(journal=opts.journal, meter=gauge)
            return _this_run(tuner, run_config(plan, cluster, opts.name, opts.storage_path, spec.num_samples, callbacks,
                                               stop=gauge, on_lost=on_lost))
    if spec.study:
        Path(spec.study).parent.mkdir(parents=True, exist_ok=True)
    searcher, param_space, scheduler = make(plan, cluster.concurrency)
    gauge = meter(plan)
    if gauge is not None and hasattr(searcher, "use_budget"):
        searcher.use_budget(gauge)
    if gauge is not None and hasattr(scheduler, "use_budget"):
        scheduler.use_budget(gauge)
    trials = (f"{spec.num_samples} trials" if spec.num_samples else "trials") + f" of up to {spec.max_t} epochs"
    if spec.budget:
        trials += f"{' or' if spec.num_samples else ''} until a budget of {spec.budget.describe()} would be spent"
    print(f"birdtune: space '{spec.space}': {trials}, "
          f"{cluster.concurrency} at a time ({spec.cpus_per_trial} CPU, {spec.gpus_per_trial} GPU each, worker "
          f"processes {'reused' if cluster.reuse_actors else 'fresh per trial'}); searching "
          f"{', '.join(spec.searched)} with {spec.searcher} + {spec.scheduler}", flush=True)
    if getattr(scheduler, "tail", None) is not None:
        print(f"birdtune: tail fill on (--tail-fill {spec.tail_fill}): once all {spec.num_samples} trials have "
              "started, workers that would sit idle continue the best stopped trials for as long as fits before "
              "the last one ends", flush=True)
    if spec.study:
        print(f"birdtune: Optuna study in {spec.study}  (live: optuna-dashboard sqlite:///{spec.study})", flush=True)
    if opts.log_to:
        from search import tracking

        print("\n".join(tracking.where(list(opts.log_to), opts.exp, opts.name)), flush=True)
    return tune.Tuner(
        trainable(plan, hooks), param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples or -1,
                                    max_concurrent_trials=cluster.concurrency, reuse_actors=cluster.reuse_actors),
        run_config=run_config(plan, cluster, opts.name, opts.storage_path, spec.num_samples, callbacks, stop=gauge,
                              on_lost=on_lost))


def revalidation_tuner(plan: Plan, cluster: Cluster, table: pd.DataFrame, hooks: TrialHooks | None = None,
                       on_lost: Callable[[str], None] | None = None):
    """The re-validation's Tuner (restored if an earlier run of it was interrupted); None if nothing to
    rerun. `table` is the search's trials table."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    spec, opts = plan.spec, plan.options
    exp = storage.join(opts.exp, layout.REVALIDATE_DIR)
    if storage.exists(storage.join(exp, "tuner.pkl")):
        restored = _restored(plan, layout.REVALIDATE_DIR, exp, journal_path(plan, layout.REVALIDATE_DIR), hooks)
        if restored is not None:
            total = len(spec.revalidate_folds) * spec.revalidate_top
            return _this_run(restored[0], run_config(plan, cluster, layout.REVALIDATE_DIR, opts.exp, total, on_lost=on_lost))
    items = revalidate.runs(table, spec.searched, spec.revalidate_top, spec.revalidate_folds)
    if not items:
        return None
    print(f"birdtune: re-validating the {len(items) // len(spec.revalidate_folds)} best configs at "
          f"{spec.max_t} epochs on folds {spec.revalidate_folds} ({len(items)} trials)", flush=True)
    return tune.Tuner(trainable(plan, hooks), param_space={"revalidate": tune.grid_search(items)},
                      tune_config=tune.TuneConfig(num_samples=1, scheduler=FIFOScheduler(),
                                                  max_concurrent_trials=cluster.concurrency,
                                                  reuse_actors=cluster.reuse_actors),
                      run_config=run_config(plan, cluster, layout.REVALIDATE_DIR, opts.exp, len(items), on_lost=on_lost))


def _restored(plan: Plan, name: str, exp: str, journal: str, hooks: TrialHooks | None):
    """The Tuner of experiment `exp` restored, once its saved state is brought up to its journal
    (search.recovery), with what that found; None when Ray saved no state before the search stopped (no
    trial had run: what it left is cleared and the search starts again)."""
    from ray import tune

    from search import recovery

    resumed = recovery.reconcile(exp, journal)
    if resumed is None:
        recovery.start_over(exp, journal, plan.options.study if name == plan.options.name else None)
        print(f"birdtune: '{name}' stopped before any trial ran: starting it again", flush=True)
        return None
    print(resumed.line(), flush=True)
    tuner = tune.Tuner.restore(exp, trainable=trainable(plan, hooks), resume_unfinished=True, resume_errored=True)
    return tuner, resumed


def upload_before_rewrite() -> None:
    """Make Ray wait for the last upload of the experiment's state before it writes the next one.

    Ray 2.60 writes the state files into the driver's staging folder, then uploads that folder in the
    background; the next save rewrites the files while that upload may still be copying them, and the
    upload fails ('Saving experiment state to storage ... failed', a pyarrow copy_files traceback; seen
    once in 14 searches, at the end). Waiting first removes the overlap; a failed upload is retried by the
    next, which copies everything again."""
    internals.wait_for_upload_before_save()


def _this_run(tuner, config):
    """A restored Tuner with this run's callbacks, failure settings and verbosity: Ray restores the first
    run's RunConfig from tuner.pkl (its live view's clock and dashboard, its study path), and offers no
    public way to change it."""
    restored = internals.restored_run_config(tuner)
    restored.callbacks, restored.failure_config, restored.verbose = config.callbacks, config.failure_config, config.verbose
    restored.stop = config.stop
    return tuner
