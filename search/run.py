"""`python -m search.run`: the search as one pipeline: cli -> plan -> cluster -> tuning -> export -> summary.

    cli.py      the command line (argparse only)
    plan.py     SearchSpec + RunOptions, every input checked before Ray starts
    cluster.py  start or join Ray: trials at once, worker reuse, the dashboard
    tuning.py   the search's Tuner (searcher.py, scheduler, trainable.py), then the re-validation's
    export.py   the outcome computed once (results.py, importance.py, revalidate.py), its files and report.py
    progress.py the live view while the Tuners run
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# the command line, the plan and the cluster start import nothing heavy: bad input is refused in about a
# second; torch, timm and Ray's Tune load once the data is read (plan.load) and the search starts
from core.errors import UserError
from search import cli, cluster, layout, plan, storage

if TYPE_CHECKING:
    from search.results import Outcome
    from search.trainable import TrialHooks


def main(argv: list[str] | None = None, hooks: TrialHooks | None = None) -> int:
    """Run the search the command line asks for; `hooks` change every trial (tests/faults.py)."""
    args = cli.parse_args(argv)
    t0 = time.time()
    try:
        p = plan.make(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before the search started", file=sys.stderr)
        return 130
    # Ray forces a state snapshot every KEEP_CHECKPOINTS checkpoints of a trial and warns about it each time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not p.options.verbose:  # Ray's legacy reporter at verbose=0 prints nothing: the LiveView speaks instead
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # and Ray's own log lines (a failed trial's traceback, a storage sync that failed) are --verbose's:
        # the summary gives each errored trial's reason, its folder keeps error.txt, and a lost storage is
        # one message below
        for name in ("ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    write_spec(p)  # before Ray starts: a search stopped from here on continues with --resume
    try:
        c = cluster.start(p)
    except UserError as e:
        if not p.options.resume:  # nothing ran: no experiment is left behind
            storage.delete(p.options.exp)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted before any trial started: continue with  {resume_command(p)}")
        return 130
    from search import records

    records.last_resort = lambda problem: _lost(p, problem, at_once=True)
    try:
        out, interrupted = search(p, c, hooks)
    except StorageLost as e:
        return _lost(p, str(e))
    except KeyboardInterrupt:  # a second Ctrl-C, or one during the export: what is exported is whole
        print(f"interrupted: continue with  {resume_command(p)}")
        return 130
    finally:
        records.last_resort = None
    if p.options.log_to:
        from search import tracking

        tracking.finish(list(p.options.log_to), p.options.exp, p.options.name, out.table,
                        out.best.trial_id if out.best is not None else None)
    print_summary(out, time.time() - t0)
    if interrupted or out.resumable:
        why = "interrupted" if interrupted else "the search did not finish"
        of = f" of {p.spec.num_samples}" if p.spec.num_samples else ""
        print(f"{why} with {len(out.table)}{of} trials started: continue with  {resume_command(p)}")
        return 130 if interrupted else 1
    return 0


class StorageLost(RuntimeError):
    """The storage stopped answering during the search; the message says how."""


storage_lost = False  # set by main() when it ended the search on a lost storage


def _lost(p: plan.Plan, problem: str, at_once: bool = False) -> int:
    """The one message for a storage that stopped answering; with at_once (from records.StorageWatch's
    thread, when the search's loop is itself stuck in a call to that storage) the process ends here."""
    global storage_lost
    storage_lost = True
    print(f"error: the storage {storage.display(p.options.exp)} stopped answering during the search ({problem}); "
          f"the search stopped there. When it answers again, continue with  {resume_command(p)}", file=sys.stderr)
    if at_once:
        end_process(1)
    return 1


def end_process(code: int) -> None:
    """End the process with main()'s exit code. After a lost storage, at once, the local Ray cluster
    stopped first: pyarrow holds a lock while any request to the storage hangs (Ray's background uploads
    retry for minutes), which would keep the process open in its S3 finalizer."""
    if not storage_lost:
        from core.process import finish

        finish(code)
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules:
        import ray

        stopper = threading.Thread(target=ray.shutdown, daemon=True)
        stopper.start()
        stopper.join(30)
    _stop_children()
    os._exit(code)


def _stop_children() -> None:
    """SIGTERM to what this process started and is still running (the local Ray cluster's agents, if
    ray.shutdown could not stop them)."""
    import signal

    def children(pid: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out + [g for c in out for g in children(c)]

    for pid in children(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def resume_command(p: plan.Plan) -> str:
    extra = (f" --storage-path {storage.shell(p.options.storage_arg)}"
             if p.options.storage_arg != layout.DEFAULT_STORAGE else "")
    return f"python -m search.run --name {p.options.name} --resume{extra}"


def search(p: plan.Plan, c: cluster.Cluster, hooks: TrialHooks | None = None, make=None,
           callbacks: tuple = ()) -> tuple[Outcome, bool]:
    """search.yaml, the search's Tuner, then (if asked and the search finished) the re-validation's, then the
    outcome exported; Ctrl-C stops the Tuners and still exports. Returns the outcome and whether it was
    interrupted. `make` and `callbacks` let the benchmarks run a stock searcher and time trials."""
    from search import export, tuning

    make = make or tuning.make_search
    write_spec(p)
    interrupted, found = False, None
    try:
        tuning.search_tuner(p, c, make=make, callbacks=callbacks, hooks=hooks).fit()
        if p.spec.revalidate_top:
            found = export.trials(p.options.exp, p.spec)
            if not found[0].empty and not found[0]["status"].eq(layout.UNFINISHED).any():  # the search finished
                tuner = tuning.revalidation_tuner(p, c, found[0], hooks)
                if tuner is not None:
                    tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # records.StorageDown, raised by a callback: as is, or wrapped in Ray's TuneError
        import re

        from search.records import StorageDown

        if isinstance(e, StorageDown):
            raise StorageLost(str(e).strip()) from None
        down = re.search(r"StorageDown: (.+)", str(e))
        if down:
            raise StorageLost(down.group(1).strip()) from None
        raise
    try:
        return export.export(p.options.exp, search=found), interrupted
    except OSError:
        problem = storage.check_writable(p.options.exp)
        if problem:
            raise StorageLost(problem) from None
        raise


def write_spec(p: plan.Plan) -> None:
    """search.yaml, once, when the search is new: --resume reads the search from it alone."""
    meta = storage.join(p.options.exp, layout.META_FILE)
    if not p.options.resume and not storage.exists(meta):
        storage.write_text(meta, p.spec.to_yaml())


def print_summary(out: Outcome, seconds: float) -> None:
    from search import export, revalidate

    spec, table = out.spec, out.table
    print()
    print(export.format_table(table, spec.searched))
    for row in table[table["status"] == layout.ERRORED].itertuples() if not table.empty else ():
        print(f"trial {row.trial_index} errored: {row.error}")
    print(f"\n{len(table)} trials ({', '.join(f'{v} {k}' for k, v in out.counts.items())}); {out.trial_epochs} "
          f"trial-epochs of at most {len(table) * spec.max_t}; {seconds:.0f} s")
    if spec.budget:
        print(f"budget: {spec.budget.describe()}; spent {out.spent.describe(spec.budget)}"
              + (" (the budget ended the search)" if out.budget_ended else ""))
    if out.best is not None:
        best = table.loc[table["best_cmap"].idxmax()]
        print(f"best: trial {best['trial_index']} cmap {best['best_cmap']:.4f} with "
              + ", ".join(f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                          for k in spec.searched))
        if "revalidation_mean_cmap" in out.best.header:
            print("re-validation (best-epoch cmap per fold):\n" + revalidate.format_ranking(out.ranking, spec.revalidate_folds))
            print("chosen by re-validation:\n" + out.best.header_text().rstrip())
        best_dir = storage.join(out.exp, layout.BEST_DIR)
        config = storage.join(best_dir, "config.yaml")
        predict = (f" (predict: python -m core.predict --model {storage.shell(best_dir)} --audio <soundscapes> "
                   "--out submission.csv)" if spec.spectrogram and not storage.is_uri(best_dir) else "")
        print(f"exported: {config} (retrain: python -m core.train --config {storage.shell(config)}), "
              f"{storage.join(best_dir, 'model.pt')}{predict}, trials.parquet, trials.csv")
    for row in out.trust:
        print(f"early stopping: {row['advice']}")
    print(f"report: {storage.join(out.exp, layout.REPORT)}")


if __name__ == "__main__":
    end_process(main())
