"""A suggestion's code, Optuna's and Ray's own against search.internals.fast_suggestions (TPE's log Phi and Phi
vectorised with SciPy's, Ray's signatures kept), side by side in one run: the same replayed searches (LCBench,
equal compute) with each, alternating, their wall times, the ratio, and whether the picks agree.

    python tests/bench/tpe_speed.py [--tasks 3945,34539,126025] [--seeds 2] [--compute 32] [--workers 4]
        [--methods birdtune,stock]

Not collected by pytest.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import replay  # noqa: E402
from search import internals  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="3945,34539,126025")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--compute", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--methods", default="birdtune,stock")
    args = p.parse_args()
    install = internals.fast_suggestions
    internals.fast_suggestions = lambda: None  # each run below uses the code set here
    times = {(m, v): [] for m in args.methods.split(",") for v in ("own", "fast")}
    same = total = 0
    install(True)  # one untimed replay first: the imports and caches it warms would count against the first variant
    replay.simulate(args.methods.split(",")[0], "lcbench", args.tasks.split(",")[0], None, args.workers, 0, compute=4)
    for task in args.tasks.split(","):
        for seed in range(args.seeds):
            for method in args.methods.split(","):
                picks = {}
                for variant, fn in (("own", False), ("fast", True)) if seed % 2 == 0 else (
                        ("fast", True), ("own", False)):
                    install(fn)
                    t0 = time.perf_counter()
                    r = replay.simulate(method, "lcbench", task, None, args.workers, seed, compute=args.compute)
                    times[method, variant].append(time.perf_counter() - t0)
                    picks[variant] = (r["quality"], r["epochs"])
                same += picks["own"] == picks["fast"]
                total += 1
                print(f"  {method} task {task} seed {seed}: their own {times[method, 'own'][-1]:.2f} s, "
                      f"birdtune's {times[method, 'fast'][-1]:.2f} s", flush=True)
    install(True)
    for method in args.methods.split(","):
        a, b = sum(times[method, "own"]), sum(times[method, "fast"])
        print(f"{method}, compute {args.compute} x {args.workers}: Optuna's and Ray's own code {a:.1f} s, "
              f"fast_suggestions' {b:.1f} s (ratio {a / b:.2f}; median run {statistics.median(times[method, 'own']):.2f} / "
              f"{statistics.median(times[method, 'fast']):.2f} s)")
    # (the replay charges each suggestion's measured time to the simulated clock, so a faster one may reorder
    # a few events and change a pick)
    print(f"the same pick and epochs with either in {same} of {total} searches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
