"""Record the peers once: each tool's methods run in its own venv (make_venvs.py) on a benchmark's tasks,
equal-compute cells and seeds (run.py), merged into tests/bench/data/peers-<benchmark>.json, which
`tests/bench/replay.py --peers FILE` adds to its tables.

    python tests/bench/peers/record.py [--tools optuna,synetune,smac,dehb,neps] [--methods M,...]
        [--benchmark lcbench] [--tasks all|dev|held|ID,...] [--compute 4,8,16,32] [--workers 2,4] [--seeds 0-9] [--processes 2]

Each tool's runs first go to tests/bench/data/.parts/peers-<benchmark>-<tool>.jsonl (a recording that stops
continues where it was; runs already in peers-<benchmark>.json are not run again); then every part is merged:
the tools' versions, the seeds, and per run its task, cell, seed, the pick's full-length quality and normalised
regret, the epochs it used (and any overshoot), the jobs refused for the budget, its wall time and its anytime
curve (at most 16 points). Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
sys.path.insert(0, str(HERE))

from make_venvs import TOOLS, python, version  # noqa: E402
from run import key  # noqa: E402

KEEP = ("tool", "method", "task", "seed", "workers", "compute", "quality", "regret", "epochs", "overshoot", "refused",
        "trials", "seconds")


def thin(anytime: list, n: int = 16) -> list:
    """At most n points of an anytime curve, its last kept."""
    if len(anytime) <= n:
        return anytime
    step = len(anytime) / (n - 1)
    return [anytime[int(i * step)] for i in range(n - 1)] + [anytime[-1]]


def merge(benchmark: str) -> Path:
    """The parts merged into peers-<benchmark>.json; runs already there that no part holds are kept (the parts
    are not committed: a recording made later, in another checkout, adds to what was recorded before)."""
    out = DATA / f"peers-{benchmark}.json"
    before = json.loads(out.read_text()) if out.is_file() else {"tools": {}, "runs": []}
    runs = {key(r): r for r in before["runs"]}
    tools, failed = dict(before.get("tools", {})), set()
    for part in sorted((DATA / ".parts").glob(f"peers-{benchmark}-*.jsonl")):
        for line in part.read_text().splitlines():
            r = json.loads(line)
            if "error" in r:
                failed.add(key(r))
                continue
            tools[r["tool"]] = r.get("version") or tools.get(r["tool"])
            runs[key(r)] = {**{k: r[k] for k in KEEP if k in r}, "anytime": thin(r.get("anytime", []))}
    errors = len(failed - set(runs))  # runs that failed and never succeeded since
    runs = sorted(runs.values(), key=lambda r: (r["tool"], r["method"], r["compute"], r["workers"], str(r["task"]), r["seed"]))
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # whole or not at all: two recordings may merge at once
    tmp.write_text(json.dumps({"benchmark": benchmark, "tools": tools, "seeds": sorted({r["seed"] for r in runs}),
                               "errors": errors, "runs": runs}, separators=(",", ":")))
    os.replace(tmp, out)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS)} (default: all)")
    p.add_argument("--methods", help="only these of the tools' methods (default: all of each tool's)")
    p.add_argument("--benchmark", default="lcbench", help="lcbench, birdtune-default or FILE.py:NAME (default lcbench)")
    p.add_argument("--tasks", default="all", help="all, dev, held (the tasks outside dev) or comma-separated task ids (default all)")
    p.add_argument("--compute", default="4,8,16,32", help="budgets in full-length trials (default 4,8,16,32)")
    p.add_argument("--workers", default="2,4", help="simulated workers (default 2,4)")
    p.add_argument("--seeds", default="0-9", help="a range or comma-separated list (default 0-9)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="runs at once (default: the CPUs)")
    p.add_argument("--merge-only", action="store_true", help="only merge the parts recorded so far")
    args = p.parse_args()
    stray = [m for m in (args.methods or "").split(",") if m and m.split("-")[0] not in args.tools.split(",")]
    if stray:  # methods are named <tool>-...
        print(f"record: {', '.join(stray)} not a method of --tools {args.tools}", file=sys.stderr)
        return 2
    (DATA / ".parts").mkdir(parents=True, exist_ok=True)
    failed = 0
    for tool in [] if args.merge_only else args.tools.split(","):
        if version(tool) is None:
            print(f"record: no venv for {tool}: run tests/bench/peers/make_venvs.py --tools {tool}", file=sys.stderr)
            failed += 1
            continue
        env = {**os.environ, "SYNETUNE_FOLDER": str(DATA / ".parts" / "synetune"), "PYTHONWARNINGS": "ignore"}
        cmd = [str(python(tool)), str(HERE / "run.py"), "--tool", tool, "--benchmark", args.benchmark, "--tasks",
               args.tasks, "--compute", args.compute, "--workers", args.workers, "--seeds", args.seeds, "--processes",
               str(args.processes), "--skip", str(DATA / f"peers-{args.benchmark}.json"), "--out",
               str(DATA / ".parts" / f"peers-{args.benchmark}-{tool}.jsonl")]
        if args.methods:
            mine = [m for m in args.methods.split(",") if m.split("-")[0] == tool]
            if not mine:
                continue
            cmd += ["--methods", ",".join(mine)]
        r = subprocess.run(cmd, env=env)
        failed += r.returncode != 0
    print(f"record: wrote {merge(args.benchmark)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
