"""A search whose driver is stopped at a chosen moment, for tests/bench/chaos.py and tests/test_faults.py. The
moments are reached by wrapping the product's own functions in this process (and, for a checkpoint being
written, in the trial's worker, through search.trainable.TrialHooks); the product has no such hook.

    python tests/stops.py MOMENT[+MOMENT...] CHAOS_DIR -- SEARCH_ARGS

MOMENT is [int:]POINT[@N]: by default the driver's whole process group (the driver, its local Ray cluster and
the trials' workers) is SIGKILLed at the N-th time (default 1) the point is reached; with `int:` the driver
gets a SIGINT instead, as from Ctrl-C. The points:

  start       right after the journal took the N-th trial start
  result      right after the journal took the N-th result
  done        right after the journal took the N-th result that ends a trial (ASHA's stop or its last epoch)
  checkpoint  while a trial's worker writes the N-th checkpoint to storage (its first file written)
  searcher    while the searcher's state is being saved (the N-th save: its pickle written, the rest not)
  study       while optuna.db is being written (the N-th trial state change, committed, not yet answered)
  state       while Ray's experiment state is being uploaded (the N-th state file copied, not yet renamed; with
              a URI, as the N-th upload of the driver's folder starts)
  export      during the export (the tables written; best/ and the report not)
  report      while the report is being drawn
  ray         while Ray is starting (ray.init running)
  after       N tenths of a second after the start
  worker      not the driver: the worker of the trial whose N-th result the journal took (SIGKILL); Ray
              restarts that trial
  doneworker  not the driver: the worker of the trial whose N-th ending result the journal took, before
              Ray has stopped it
  none        no stop

Counts of points reached in the trials' workers are kept in files under CHAOS_DIR.
"""
from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POINTS = ("start", "result", "done", "checkpoint", "searcher", "study", "state", "export", "report", "ray",
          "after", "worker", "doneworker", "none")


@dataclass(frozen=True)
class Moment:
    point: str
    n: int = 1
    interrupt: bool = False  # SIGINT to the driver instead of SIGKILL to its process group

    @classmethod
    def parse(cls, text: str) -> "Moment":
        interrupt = text.startswith("int:")
        point, _, n = text.removeprefix("int:").partition("@")
        if point not in POINTS:
            raise SystemExit(f"chaos: unknown point '{point}'; choose {', '.join(POINTS)}")
        return cls(point, int(n or 1), interrupt)

    def __str__(self) -> str:
        return f"{'int:' if self.interrupt else ''}{self.point}@{self.n}"


def stop(moment: Moment, group: int) -> None:
    """Stop the driver as the moment says: SIGINT to it, or SIGKILL to its whole process group."""
    sys.stdout.flush()
    if moment.interrupt:
        os.kill(group, signal.SIGINT)
    else:
        os.killpg(group, signal.SIGKILL)


def count(folder: str, name: str) -> int:
    """How many times this point has been reached (this call included), across processes."""
    with open(os.path.join(folder, f"count-{name}"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("x")
        fh.flush()
        return os.path.getsize(fh.name)


@dataclass(frozen=True)
class CheckpointStop:
    """TrialHooks.wrap_report for the `checkpoint` point: in the trial's worker, the N-th checkpoint copied to
    storage stops the driver's group after its first file (pickled to the workers with the group's id)."""

    moment: Moment
    folder: str
    group: int

    def __call__(self, config, report):
        from ray.train._internal import storage as ray_storage

        original = ray_storage._pyarrow_fs_copy_files
        if not getattr(original, "_chaos", False):
            moment, folder, group = self.moment, self.folder, self.group

            def copy(source, destination, source_filesystem=None, destination_filesystem=None, **kw):
                if "checkpoint_" in str(destination) and os.path.isdir(str(source)) \
                        and count(folder, "checkpoint") == moment.n:
                    first = sorted(os.listdir(source))[0]
                    original(os.path.join(source, first), f"{destination}/{first}",
                             destination_filesystem=destination_filesystem, **kw)
                    stop(moment, group)
                return original(source, destination, source_filesystem=source_filesystem,
                                destination_filesystem=destination_filesystem, **kw)

            copy._chaos = True
            ray_storage._pyarrow_fs_copy_files = copy
        return report


def install(moment: Moment, folder: str) -> object | None:
    """Wrap the product's functions so that the moment stops the driver (each wrapping goes around what is
    there, so moments combine); returns a TrialHooks for a point reached in the trials' workers."""
    group = os.getpgrp()
    if not moment.interrupt and group != os.getpid():
        raise SystemExit("chaos: the driver must lead its own process group (start it with setsid), or a SIGKILL "
                         "to the group would reach its parent")
    if moment.interrupt:
        group = os.getpid()

    def at(name: str, extra=None) -> None:
        if count(folder, name) == moment.n:
            if extra:
                extra()
            else:
                stop(moment, group)

    p = moment.point
    if p in ("start", "result", "done", "worker", "doneworker"):
        from search.journal import Journal

        on_start, on_result = Journal.on_trial_start, Journal.on_trial_result

        def trial_start(self, iteration, trials, trial, **info):
            on_start(self, iteration, trials, trial, **info)
            if p == "start":
                at("start")

        def trial_result(self, iteration, trials, trial, result, **info):
            on_result(self, iteration, trials, trial, result, **info)
            if p == "result" or (p == "done" and result.get("done")):
                at(p)
            elif p == "worker" or (p == "doneworker" and result.get("done")):
                at(p, lambda: os.kill(int(result["pid"]), signal.SIGKILL))

        Journal.on_trial_start, Journal.on_trial_result = trial_start, trial_result
    elif p == "searcher":
        from ray.tune.search.optuna import OptunaSearch

        save = OptunaSearch.save

        def saving(self, checkpoint_path):
            save(self, checkpoint_path)
            at("searcher")

        OptunaSearch.save = saving
    elif p == "study":
        import optuna

        set_state = optuna.storages.RDBStorage.set_trial_state_values

        def setting(self, *a, **kw):
            out = set_state(self, *a, **kw)
            at("study")
            return out

        optuna.storages.RDBStorage.set_trial_state_values = setting
    elif p == "state":
        import shutil

        from ray.train._internal import storage as ray_storage

        copyfile, upload = shutil.copyfile, ray_storage._upload_to_fs_path

        def copying(src, dst, *a, **kw):  # a local storage path: Ray's state file by file (atomic_local_uploads)
            out = copyfile(src, dst, *a, **kw)
            if os.path.basename(str(src)).startswith(("experiment_state-", "search_gen_state-", "searcher-state-")):
                at("state")
            return out

        def uploading(local_path, fs, fs_path, exclude=None):  # a URI: the driver's folder in one upload
            if os.path.isdir(local_path) and any(n.startswith("experiment_state-") for n in os.listdir(local_path)):
                at("state")
            return upload(local_path, fs, fs_path, exclude)

        shutil.copyfile, ray_storage._upload_to_fs_path = copying, uploading
    elif p in ("export", "report"):
        from search import export, report

        target, attr = (export, "_write_bundle") if p == "export" else (report, "render")
        inner = getattr(target, attr)

        def stopping(*a, **kw):
            at(p)
            return inner(*a, **kw)

        setattr(target, attr, stopping)
    elif p == "ray":
        import ray

        init = ray.init

        def starting(*a, **kw):
            threading.Timer(0.5, lambda: at("ray")).start()
            return init(*a, **kw)

        ray.init = starting
    elif p == "after":
        threading.Timer(moment.n / 10, lambda: stop(moment, group)).start()
    elif p == "checkpoint":
        from search.trainable import TrialHooks

        return TrialHooks(wrap_report=CheckpointStop(moment, folder, group))
    return None


# --- what a search that survived its stops must hold ----------------------------------------------------
def check(exp: Path, num_samples: int, journal: Path | None = None, study: Path | None = None) -> list[str]:
    """What is wrong with a finished experiment folder (local; a URI experiment copied here): [] when every
    trial is accounted for (completed or stopped early, each config once, one folder each), every trial's
    result.json holds its epochs 1..n once each, optuna.db's states and values equal trials.csv's, the
    exported best equals the best result of the journal, and ASHA's decisions replay from the journal."""
    import json

    import optuna
    import yaml

    from helpers import read_table
    from search import journal as journal_mod
    from search.scheduler import ResumableASHA, replay

    RAY_TRIAL = "ray_trial_id"  # (search.searcher's)

    problems: list[str] = []
    spec = yaml.safe_load((exp / "search.yaml").read_text())
    table = read_table(exp / "trials.csv")
    if len(table) != num_samples:
        problems.append(f"{len(table)} trials in trials.csv, not {num_samples}")
    bad = table[~table.status.isin(["completed", "stopped_early"])]
    problems += [f"trial {r.trial_index} ({r.trial_id}) is {r.status}" for r in bad.itertuples()]
    dup = table[table.duplicated(spec["searched"], keep=False)]
    if not dup.empty:
        problems.append(f"configs run twice as two trials: {dup.trial_id.tolist()}")
    folders = {d.name.split("_")[2]: d for d in exp.glob("train_trial_*") if d.is_dir()}
    if sorted(folders) != sorted(table.trial_id):
        problems.append(f"{len(folders)} trial folders for {len(table)} trials: "
                        f"{sorted(set(folders) ^ set(table.trial_id))} differ")
    for r in table.itertuples():
        if r.trial_id not in folders:
            continue
        lines = (folders[r.trial_id] / "result.json").read_text().splitlines()
        epochs = [json.loads(x)["epoch"] for x in lines if x.strip()]
        if epochs != list(range(1, len(epochs) + 1)) or len(epochs) != r.epochs:
            problems.append(f"trial {r.trial_index} ({r.trial_id}) reported epochs {epochs} (trials.csv: {r.epochs})")
    events = journal_mod.read(str(journal or exp / "results_log.jsonl"))
    logged = journal_mod.results(events)
    if spec.get("study"):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{study or exp / 'optuna.db'}")
        if len(st.trials) != len(table):
            problems.append(f"optuna.db holds {len(st.trials)} trials, trials.csv {len(table)}")
        by_id = {t.user_attrs.get(RAY_TRIAL): t for t in st.trials}
        if None in by_id:  # a study written before trials were tagged: matched by their values
            values = {tuple(round(t.params[k], 12) for k in spec["searched"]): t for t in st.trials}
            by_id = {r.trial_id: values.get(tuple(round(getattr(r, k), 12) for k in spec["searched"]))
                     for r in table.itertuples()}
        want = {"completed": "COMPLETE", "stopped_early": "PRUNED"}
        for r in table.itertuples():
            t = by_id.get(r.trial_id)
            if t is None:
                problems.append(f"trial {r.trial_index} ({r.trial_id}) is not in optuna.db")
                continue
            if t.state.name != want.get(r.status):
                problems.append(f"trial {r.trial_index} ({r.trial_id}): optuna.db {t.state.name}, trials.csv {r.status}")
            if t.state.name == "COMPLETE" and abs(t.value - r.best_cmap) > 1e-9:
                problems.append(f"trial {r.trial_index} ({r.trial_id}): optuna.db value {t.value}, best_cmap {r.best_cmap}")
            if any(abs(t.params[k] - getattr(r, k)) > 1e-12 for k in spec["searched"]):
                problems.append(f"trial {r.trial_index} ({r.trial_id}): optuna.db params {t.params} differ")
    head = [ln[2:] for ln in (exp / "best" / "config.yaml").read_text().splitlines() if ln.startswith("# ")]
    best = yaml.safe_load("\n".join(head)).get("best_cmap")
    logged_best = max(e["cmap"] for e in logged if e.get("cmap") is not None and e.get("status") != "diverged")
    if best is None or abs(best - logged_best) > 1e-12:
        problems.append(f"exported best_cmap {best}, the journal's best {logged_best}")
    if spec["scheduler"] == "asha":
        fresh = ResumableASHA(time_attr="epoch", metric="cmap", mode="max", max_t=spec["max_t"],
                              grace_period=spec["grace_period"], reduction_factor=spec["reduction_factor"],
                              num_samples=spec["num_samples"])
        stops = replay(fresh, logged)
        differ = {t: (stops.get(t), e) for t, e in zip(table.trial_id, table.epochs) if stops.get(t) != e}
        if differ:
            problems.append(f"ASHA replayed from the journal stops trials elsewhere (trial: replay, search): {differ}")
    return problems


def main() -> int:
    moment_text, folder, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: stops.py MOMENT CHAOS_DIR -- SEARCH_ARGS"
    os.makedirs(folder, exist_ok=True)
    # as search.cluster does for a cluster it starts, before the wrapping below imports Ray (which reads it once)
    if "--address" not in args:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    hooks = None
    for text in moment_text.split("+"):
        hooks = install(Moment.parse(text), folder) or hooks
    from search import run

    return run.main(args, hooks=hooks)


if __name__ == "__main__":
    from search import shutdown

    shutdown.end_process(main())
