"""`python -m search.run`: the search as one pipeline: cli -> plan -> cluster -> tuning -> export -> summary.

    cli.py      the command line (argparse only)
    plan.py     the plan (spec.py's SearchSpec + RunOptions), every input checked before Ray starts
    cluster.py  start or join Ray: trials at once, worker reuse, the dashboard
    tuning.py   the search's Tuner (searcher.py, scheduler.py, trainable.py), then the re-validation's
    export.py   the outcome computed once (tables.py, importance.py, revalidate.py), its files and report.py
    summary.py  the lines printed at the end; shutdown.py how the process ends
"""
from __future__ import annotations

import logging
import os
import sys
import time
from functools import partial
from typing import TYPE_CHECKING

# the command line, the plan and the cluster start import nothing heavy: bad input is refused in about a
# second; torch, timm and Ray's Tune load once the data is read (dataset.load) and the search starts
from core.errors import UserError
from search import cli, cluster, layout, plan, shutdown, spec, storage
from search.spec import Plan

if TYPE_CHECKING:
    from search.tables import Outcome
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
    _quiet_ray(p.options.verbose)
    spec.write(p)  # before Ray starts: a search stopped from here on continues with --resume
    try:
        c = cluster.start(p)
    except UserError as e:
        if not p.options.resume:  # nothing ran: no experiment is left behind
            storage.delete(p.options.exp)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted before any trial started: continue with  {p.options.resume_command}")
        return 130
    try:
        out, interrupted = search(p, c, hooks)
    except shutdown.StorageLost as e:
        shutdown.storage_lost(p.options, str(e))
    except KeyboardInterrupt:  # a second Ctrl-C, or one during the export: what is exported is whole
        print(f"interrupted: continue with  {p.options.resume_command}")
        return 130
    if p.options.log_to:
        from search import tracking

        tracking.finish(list(p.options.log_to), p.options.exp, p.options.name, out.table,
                        out.best.trial_id if out.best is not None else None)
    from search.summary import print_summary

    print_summary(out, time.time() - t0)
    if interrupted or out.resumable:
        why = "interrupted" if interrupted else "the search did not finish"
        of = f" of {p.spec.num_samples}" if p.spec.num_samples else ""
        print(f"{why} with {len(out.table)}{of} trials started: continue with  {p.options.resume_command}")
        return 130 if interrupted else 1
    return 0


def _quiet_ray(verbose: bool) -> None:
    """Ray's own output off unless --verbose: the LiveView speaks instead."""
    # Ray forces a state snapshot every KEEP_CHECKPOINTS checkpoints of a trial and warns about it each time
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Ray's legacy reporter at verbose=0 prints nothing
    # and Ray's log lines (a failed trial's traceback, a storage sync that failed) are --verbose's: the summary
    # gives each errored trial's reason, its folder keeps error.txt, and a lost storage is one message
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def search(p: Plan, c: cluster.Cluster, hooks: TrialHooks | None = None, make=None,
           callbacks: tuple = ()) -> tuple[Outcome, bool]:
    """search.yaml, the search's Tuner, then (if asked and the search finished) the re-validation's, then the
    outcome exported; Ctrl-C stops the Tuners and still exports. Returns the outcome and whether it was
    interrupted. `make` and `callbacks` let the benchmarks run a stock searcher and time trials."""
    from search import export, tuning

    make = make or tuning.make_search
    spec.write(p)
    lost = partial(shutdown.storage_lost, p.options)  # the storage watch's last resort: the loop is stuck
    interrupted, found = False, None
    try:
        tuning.search_tuner(p, c, make=make, callbacks=callbacks, hooks=hooks, on_lost=lost).fit()
        if p.spec.revalidate_top:
            found = export.trials(p.options.exp, p.spec)
            if not found[0].empty and not found[0]["status"].eq(layout.UNFINISHED).any():  # the search finished
                tuner = tuning.revalidation_tuner(p, c, found[0], hooks, on_lost=lost)
                if tuner is not None:
                    tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    except Exception as e:  # watch.StorageDown, raised by a callback: as is, or wrapped in Ray's TuneError
        import re

        from search.watch import StorageDown

        if isinstance(e, StorageDown):
            raise shutdown.StorageLost(str(e).strip()) from None
        down = re.search(r"StorageDown: (.+)", str(e))
        if down:
            raise shutdown.StorageLost(down.group(1).strip()) from None
        raise
    try:
        return export.export(p.options.exp, search=found), interrupted
    except OSError:
        problem = storage.check_writable(p.options.exp)
        if problem:
            raise shutdown.StorageLost(problem) from None
        raise


if __name__ == "__main__":
    shutdown.end_process(main())
