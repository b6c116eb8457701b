"""Kill the driver anywhere, resume, lose nothing: one search, stopped again and again, each time resumed with the
same command and `--resume`, until it is done; then checked.

    python tests/bench/chaos.py --kills 20 --seed 0 [--space smoke] [--num-samples 64] [--s3] [--root DIR]
                                [--json FILE] [--state-every S]

The stops (tests/stops.py says how each is reached) are the known hard moments, each once: while Ray is
starting, right after a trial's result line, right after the result that ends a trial, while a checkpoint is
being written, while the searcher's state or optuna.db is being saved, while Ray's experiment state is being
uploaded, during the export and during the report; a trial's worker killed instead of the driver; and, for the
rest of the --kills, seeded random ones: a random point after a random number of its occurrences, or at a
random time. A quarter of the driver's stops are a SIGINT (Ctrl-C), the rest a SIGKILL of the driver's whole
process group. A stop that a run does not reach (the search ended first) is not counted as a kill.

At the end it checks (tests/stops.check) that every trial is accounted for (completed or stopped early; none
errored, unfinished or run twice as two trials), that no epoch is repeated or skipped in any trial's
result.json, that optuna.db's states and values equal trials.csv's, that the exported best equals the best
result of the journal (results_log.jsonl) and that ASHA's decisions replay from it; and that no run printed a
third-party log line (Optuna's, Ray's). It prints one line per stop (when, what the resume found) and the
count of kills survived. --s3 runs the search on a local S3 server (moto) and checks a copy of the bucket.

Ray saves its state every 10 s or more; --state-every S (default 3600, i.e. only at the start of each run)
makes that explicit, so that every stop lands after the state's last save, where --resume has to fill in
the most. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(ROOT))

import stops  # noqa: E402

# the known hard moments, each once per sequence (export and report last: they end the search)
HARD = ["ray@1", "result@2", "done@1", "checkpoint@3", "searcher@2", "study@3", "state@2", "worker@2+result@4"]
LAST = ["export@1", "report@1"]
# third-party log lines: Optuna's '[I 2026-...]', Ray's '2026-12-04 16:00:00,123\tINFO ...', its '(raylet)'
# and actors' prefixed lines
FOREIGN = re.compile(r"^\[[IWE] \d{4}-|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)|^\((raylet|pid=|ImplicitFunc)")


def random_moment(rng: random.Random) -> str:
    point = rng.choices(["result", "done", "start", "checkpoint", "searcher", "study", "state", "after", "worker"],
                        weights=[4, 2, 2, 2, 1, 2, 1, 3, 1])[0]
    if point == "after":
        return f"after@{rng.randint(30, 180)}"
    if point == "worker":
        n = rng.randint(1, 4)
        return f"worker@{n}+result@{n + rng.randint(1, 3)}"
    n = {"result": (1, 6), "done": (1, 2), "start": (1, 3), "checkpoint": (1, 6), "searcher": (1, 3),
         "study": (1, 6), "state": (1, 3)}[point]
    return f"{point}@{rng.randint(*n)}"


def moments(kills: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    middle = HARD[1:] + [random_moment(rng) for _ in range(max(0, kills - len(HARD) - len(LAST)))]
    rng.shuffle(middle)
    out = [HARD[0]] + middle + LAST
    # a quarter of the driver's stops are Ctrl-C (not the worker's, not the first: Ray starting)
    for i in rng.sample(range(1, len(out) - len(LAST)), k=len(out) // 4):
        if "worker" not in out[i]:
            out[i] = "+".join("int:" + m if not m.startswith("worker") else m for m in out[i].split("+"))
    return out if kills >= len(out) else out[:max(1, kills - len(LAST))] + LAST[:kills - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", default="smoke")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--root", help="working folder (default: a new temporary one, removed unless it fails)")
    ap.add_argument("--s3", action="store_true", help="results on a local S3 server (moto)")
    ap.add_argument("--state-every", type=float, default=3600, help="Ray's TUNE_GLOBAL_CHECKPOINT_S")
    ap.add_argument("--timeout", type=float, default=600, help="seconds one run may take")
    ap.add_argument("--json", help="write the stops and the checks here")
    args = ap.parse_args()
    if args.kills < 1:
        ap.error("--kills must be >= 1")
    root = Path(args.root or tempfile.mkdtemp(prefix="birdtune-chaos-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    import helpers

    env = {**helpers.ENV, "TUNE_GLOBAL_CHECKPOINT_S": str(args.state_every),
           "BIRDTUNE_CACHE": os.environ.get("BIRDTUNE_CACHE", str(Path.home() / ".cache" / "birdtune"))}
    server = None
    name = f"chaos-{args.seed}"
    if args.s3:
        import s3server

        server = s3server.start()
        env = {**env, **server.env()}
        store = server.uri("chaos")
    else:
        store = str(root / "results")
    search = ["--space", args.space, "--no-dashboard", "--storage-path", store, "--name", name,
              "--num-samples", str(args.num_samples)]
    plan = moments(args.kills, args.seed)
    records, outputs = [], []
    print(f"chaos: {len(plan)} stops, seed {args.seed}, {args.num_samples} trials of the '{args.space}' space, "
          f"results in {store}; working folder {root}", flush=True)
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), desc="stops", unit="stop", leave=False)
        for i, moment in enumerate(plan + ["none"]):
            cmd = [sys.executable, str(TESTS / "stops.py"), moment, str(root / f"chaos-{i}"), "--", *search]
            if i:
                cmd.append("--resume")
            t0 = time.time()
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                out += f"\nchaos: the run took over {args.timeout:.0f} s and was killed"
            seconds = time.time() - t0
            (root / f"run-{i}.log").write_text(out)
            outputs.append(out)
            code = proc.returncode
            # a SIGKILL ends the run with -9; Ctrl-C with 130 (or 1: Ray's Tuner stops the search on its own and
            # the driver says the search did not finish), with the --resume command
            stopped = code == -signal.SIGKILL or ("int:" in moment and code in (1, 130) and "continue with" in out)
            found = next((ln for ln in out.splitlines() if ln.startswith(("birdtune: resuming", "birdtune: '"))), "")
            if records:
                records[-1]["resume_found"] = found.removeprefix("birdtune: ")
                records[-1]["resume_code"] = code
            if moment != "none":
                records.append({"stop": i + 1, "moment": moment, "reached": stopped, "code": code,
                                "seconds": round(seconds, 1)})
                bar.update(1)
        bar.close()
        for r in records:
            how = ("SIGINT" if "int:" in r["moment"] else "SIGKILL") if r["reached"] else "not reached"
            print(f"stop {r['stop']:2d}: {r['moment']:<22} {how:<11} after {r['seconds']:5.1f} s -> "
                  f"resume (exit {r.get('resume_code')}): {r.get('resume_found') or '-'}")
        exp, journal, study = root / "results" / name, None, None
        if server is not None:  # a local copy of the bucket's experiment; the journal and study are local
            import pyarrow.fs as pafs

            from core.files import filesystem

            os.environ.update(server.env())  # (the bucket's endpoint and credentials, as the searches had them)
            fs, path = filesystem(store)
            exp = root / "bucket" / name
            exp.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(f"{path}/{name}", str(exp), source_filesystem=fs)
            journal, study = root / "results" / name / "results_log.jsonl", root / "results" / name / "optuna.db"
        problems = stops.check(exp, args.num_samples, journal, study)
        foreign = sorted({ln for out in outputs[1:] for ln in out.splitlines() if FOREIGN.search(ln)})
        problems += [f"a run printed a third-party log line: {ln[:200]}" for ln in foreign[:10]]
        crashed = [i for i, out in enumerate(outputs) if "Traceback (most recent call last)" in out]
        problems += [f"run {i} printed a traceback (run-{i}.log)" for i in crashed]
        if outputs and "report:" not in outputs[-1]:
            problems.append("the last resume did not finish the search (run-%d.log)" % (len(outputs) - 1))
        kills = sum(r["reached"] for r in records)
        survived = kills if not problems else 0
        for p in problems:
            print(f"PROBLEM: {p}")
        print(f"chaos: {survived} of {kills} kills survived with nothing lost or repeated "
              f"({len(records) - kills} stops not reached: the search had ended; seed {args.seed}"
              f"{', S3' if server else ''})")
        if args.json:
            Path(args.json).write_text(json.dumps({"seed": args.seed, "s3": bool(server), "kills": kills,
                                                   "survived": survived, "stops": records, "problems": problems},
                                                  indent=1))
        if not problems and not args.root:
            shutil.rmtree(root, ignore_errors=True)
        return 0 if not problems else 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
