"""Thousands of trials through birdtune's real driver: what its bookkeeping costs at the scale budgets and
clusters bring.

    python tests/bench/many.py [--trials 1000] [--concurrency 16] [--epochs 4] [--epoch-seconds 1]
                               [--task 3945] [--tail-fill auto|on|off] [--root DIR] [--json FILE]

One search, run as `python -m search.run` runs it (real Ray on this machine, birdtune's driver: the default
searcher and scheduler, its callbacks, journal, progress lines, export and report), whose trainable answers from
the LCBench surrogate: each epoch sleeps --epoch-seconds and reports the surrogate's val_accuracy, on a fraction
of a CPU (2 / concurrency here), so --concurrency trials run at once on 2 cores. The search is started for
--trials + 2 x concurrency trials and its driver killed (SIGKILL, its whole process group) once --trials trials
have ended; then `--resume` finishes it. Printed, and written with --json:

- wall time against the ideal (the epochs run x --epoch-seconds / concurrency), until the kill;
- the driver's CPU time and private memory (USS, from /proc) over the search, at the end and its maximum (each
  second's sample also in DIR/driver-samples.jsonl with the trials ended by then, kept if the run is cut off);
- the searcher's suggestion time (median ms) at the first and the last 100 trials;
- the size of results_log.jsonl, optuna.db and Ray's experiment state at the end, and the time their writes
  take (the journal's lines, Ray's saves of its state, the study's share of the searcher's calls);
- the export + report time (after the resume, at --trials + 2 x concurrency trials) and the time from `--resume`
  to its first new trial (none when every trial had started before the kill) and to its first journal event.
The search's figures are printed, and written with --json, at the kill already; the rest after the resume.

Keys of --json: trials, concurrency, wall_s, ideal_s, driver_uss_mb_end, driver_uss_mb_max,
suggest_ms_first100, suggest_ms_last100, export_report_s, resume_first_trial_s, and the rest named as printed.
Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

STATS = "driver-stats.jsonl"  # what the driver measures of itself, a line per measurement (kept across a kill)
SAMPLES = "driver-samples.jsonl"  # the orchestrator's samples of the driver: USS, CPU time, trials ended
_SURROGATES: dict = {}  # per worker process: a reused worker loads the ONNX model once


def surrogate_trial(config: dict, *, task: str, epochs: int, seconds: float) -> None:
    """A trial that answers from the surrogate: its first `epochs` epochs, each after `seconds` of sleep."""
    import time

    from ray import tune

    from lcbench import Surrogate

    if "s" not in _SURROGATES:
        _SURROGATES["s"] = Surrogate()
    acc, _ = _SURROGATES["s"].curves(task, [config])
    for e in range(1, epochs + 1):
        time.sleep(seconds)
        tune.report({"epoch": e, "cmap": float(acc[0, e - 1]) / 100, "time_this_iter_s": seconds})


# --- the driver: search.run.main with the surrogate as the trainable and its own costs measured ---------------
def driver(args) -> int:
    import dataclasses

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # as search.cluster does, before the imports below load Ray

    import spaces
    from search import export, internals, journal, layout, plan, run, searcher, tuning
    from lcbench import Surrogate

    stats = open(Path(args.root) / STATS, "a", buffering=1)

    def note(kind: str, seconds: float) -> None:
        stats.write(json.dumps({"k": kind, "s": round(seconds, 6), "t": round(time.time(), 3)}) + "\n")

    def timed(owner, name: str, kind: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                note(kind, time.perf_counter() - t0)

        setattr(owner, name, wrapper)

    space = dataclasses.replace(Surrogate().space(), name="lcbench", epochs=args.epochs, num_samples=args.trials)
    spaces.SPACES["lcbench"] = space  # (the report and --resume look it up by name)
    make = plan.make

    def make_lcbench(cli_args):
        p = make(cli_args)
        if cli_args.resume:
            return dataclasses.replace(p, space=space)
        spec = dataclasses.replace(p.spec, space="lcbench", searched=list(space.distributions()),
                                   points=[dict(x) for x in space.points],
                                   grace_period=layout.grace_period(space.grace_period, args.epochs),
                                   reduction_factor=space.reduction_factor)
        return dataclasses.replace(p, spec=spec, space=space)

    plan.make = make_lcbench

    def trainable(p, hooks=None):
        from ray import tune

        return tune.with_resources(tune.with_parameters(surrogate_trial, task=args.task, epochs=args.epochs,
                                                        seconds=args.epoch_seconds),
                                   {"cpu": 2 / args.concurrency})

    tuning.trainable = trainable
    timed(searcher.MultiFidelityTPE, "suggest", "suggest")
    timed(searcher.AshaAwareOptunaSearch, "on_trial_result", "searcher_result")
    timed(searcher.AshaAwareOptunaSearch, "on_trial_complete", "searcher_complete")
    timed(journal.Journal, "write", "journal_write")
    timed(internals.experiment_state_manager(), "sync_up_experiment_state", "state_save")
    timed(export, "export", "export_report")
    argv = ["--no-dashboard", "--storage-path", str(Path(args.root) / "results"), "--name", "many",
            *(["--resume"] if args.resume else ["--space", "smoke", "--num-samples", str(args.trials), "--concurrency",
                                                 str(args.concurrency), "--epochs", str(args.epochs),
                                                 "--tail-fill", args.tail_fill])]
    return run.main(argv)


# --- the orchestrator ---------------------------------------------------------------------------------------
def uss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = sum(int(line.split()[1]) for line in text.splitlines() if line.startswith(("Private_Clean", "Private_Dirty")))
    return kb / 1024


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tail:
    """The journal's events as the driver appends them, each line parsed once: reading the whole journal at
    every poll (114 MB, 1.5 s, at 10,000 trials) took a good part of a core from the search it measures."""

    def __init__(self, path: Path):
        self.path, self.pos, self.events = path, 0, []

    def read(self) -> list[dict]:
        from search import journal

        if self.path.is_file():
            with self.path.open("rb") as fh:
                fh.seek(self.pos)
                chunk = fh.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next read
            self.events += journal.parse(chunk[:end].splitlines())
            self.pos += end
        return self.events


def launch(args, root: Path, resume: bool, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--driver", "--root", str(root), "--trials", str(args.trials + 2 * args.concurrency),
           "--concurrency", str(args.concurrency), "--epochs", str(args.epochs), "--epoch-seconds",
           str(args.epoch_seconds), "--task", args.task, "--tail-fill", args.tail_fill] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def main() -> int:
    from search.layout import TAIL_FILL

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--epoch-seconds", type=float, default=1.0)
    ap.add_argument("--task", default="3945")
    ap.add_argument("--tail-fill", default="auto", choices=TAIL_FILL,
                    help="the search's --tail-fill (its trials keep no checkpoint: nothing is continued)")
    ap.add_argument("--root", help="working folder (default: a new temporary one)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.driver:
        from search import shutdown

        shutdown.end_process(driver(args))
    root = Path(args.root or tempfile.mkdtemp(prefix="birdtune-many-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    exp = root / "results" / "many"
    print(f"many: {args.trials} trials (+{2 * args.concurrency} after a kill and --resume), {args.concurrency} at once, "
          f"{args.epochs} epochs of {args.epoch_seconds:g} s; working folder {root}", flush=True)
    samples: list[tuple[float, float, float]] = []  # (time, USS MB, CPU s) of the driver

    def sample(proc: subprocess.Popen, stop: threading.Event) -> None:
        with (root / SAMPLES).open("a", buffering=1) as fh:  # kept on disk too: a run cut off keeps them
            while not stop.wait(1.0):
                u, c = uss_mb(proc.pid), cpu_s(proc.pid)
                if u is not None and c is not None:
                    samples.append((time.time(), u, c))
                    fh.write(json.dumps({"t": round(samples[-1][0], 1), "uss_mb": round(u, 1), "cpu_s": round(c, 2),
                                         "ended": ended}) + "\n")

    from tqdm import tqdm

    tail, ended, seen = Tail(exp / "results_log.jsonl"), 0, 0
    proc = launch(args, root, False, root / "run-1.log")
    stop = threading.Event()
    threading.Thread(target=sample, args=(proc, stop), daemon=True).start()
    bar = tqdm(total=args.trials, desc="trials ended", unit="trial")
    while proc.poll() is None:
        time.sleep(2)
        ev = tail.read()
        ended += sum(1 for e in ev[seen:] if e["event"] == "end")
        seen = len(ev)
        bar.update(min(ended, args.trials) - bar.n)
        if ended >= args.trials:
            break
    killed_at = time.time()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    bar.close()
    if ended < args.trials:
        print(f"many: the search ended before {args.trials} trials (see {root / 'run-1.log'})", file=sys.stderr)
        return 1
    ev = list(tail.read())
    starts = [e["t"] for e in ev if e["event"] == "start"]
    epochs_run = sum(1 for e in ev if e["event"] == "result")
    wall = killed_at - starts[0]
    ideal = epochs_run * args.epoch_seconds / args.concurrency
    search = dict(trials=args.trials, concurrency=args.concurrency, epochs=args.epochs,
                  epoch_seconds=args.epoch_seconds, wall_s=round(wall, 1), ideal_s=round(ideal, 1),
                  wall_over_ideal=round(wall / ideal, 3),
                  driver_cpu_s=round(samples[-1][2], 1) if samples else None,
                  driver_uss_mb_end=round(samples[-1][1], 1) if samples else None,
                  driver_uss_mb_max=round(max(s[1] for s in samples), 1) if samples else None)
    print(f"many: the search, until the kill: {search}", flush=True)
    if args.json:  # written now too: a run cut off during the resume keeps these
        Path(args.json).write_text(json.dumps(search, indent=1))
    before = time.time()
    proc = launch(args, root, True, root / "run-2.log")
    first_new = first_event = None
    known, seen = {e["trial_id"] for e in ev if e["event"] == "start"}, len(ev)
    while proc.poll() is None:
        time.sleep(0.2)
        if first_new is None:
            ev = tail.read()
            if first_event is None and len(ev) > seen:
                first_event = ev[seen].get("t", time.time()) - before
            new = [e for e in ev[seen:] if e["event"] == "start" and e["trial_id"] not in known]
            seen = len(ev)
            if new:
                first_new = new[0]["t"] - before
    proc.wait()
    stats = [json.loads(x) for x in (root / STATS).read_text().splitlines()]
    by = lambda k: [s["s"] for s in stats if s["k"] == k]  # noqa: E731
    suggest = by("suggest")
    import numpy as np

    def mb(p: Path) -> float:
        return p.stat().st_size / 1e6 if p.is_file() else 0.0

    state = sorted(exp.glob("experiment_state-*.json"))
    out = dict(**search, suggest_ms_first100=round(1000 * float(np.median(suggest[:100])), 2),
               suggest_ms_last100=round(1000 * float(np.median(suggest[args.trials - 100:args.trials])), 2),
               journal_mb=round(mb(exp / "results_log.jsonl"), 2), journal_write_us=round(1e6 * float(np.mean(by("journal_write"))), 1),
               optuna_db_mb=round(mb(exp / "optuna.db"), 2),
               searcher_result_ms=round(1000 * float(np.mean(by("searcher_result"))), 2),
               searcher_complete_ms=round(1000 * float(np.mean(by("searcher_complete"))), 2),
               ray_state_mb=round(mb(state[-1]), 2) if state else 0.0,
               ray_state_save_s_mean=round(float(np.mean(by("state_save"))), 3),
               ray_state_save_s_max=round(float(np.max(by("state_save"))), 3),
               export_report_s=round(by("export_report")[-1], 1) if by("export_report") else None,
               resume_first_trial_s=round(first_new, 1) if first_new is not None else None,
               resume_first_event_s=round(first_event, 1) if first_event is not None else None,
               resume_exit=proc.returncode)
    for k, v in out.items():
        print(f"{k:>24}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
