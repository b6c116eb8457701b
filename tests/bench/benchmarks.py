"""The replay's benchmark protocol, its built-in benchmarks, and each task's reference best and median.

A benchmark is any object with:

    name: str                       what the tables and caches call it
    tasks: list[str]                every valid task id
    dev_tasks: list[str]            the tasks choices may be made on (the others are held out)
    space() -> spaces.Space         define-by-run (categorical and conditional parameters allowed), the
                                    benchmark's defaults as points[0], epochs = its top fidelity
    curves(task, configs) -> (metric, seconds)
                                    numpy arrays of shape [len(configs), epochs]: the metric after each epoch
                                    (higher is better) and the seconds each epoch takes

`curves` may take `seed` and `hits` keywords too (a noisy benchmark draws its noise from them: the replay
passes the replay's seed and a dict it keeps per simulated search).

`--benchmark FILE.py:NAME` loads NAME from a Python file: an object with the above, or a callable with no
arguments returning one. The built-ins are `lcbench` (YAHPO Gym's LCBench surrogate, tests/bench/lcbench.py)
and `birdtune-default` / `birdtune-tiny` (this project's recorded finetune tables).

A task's reference best and median come from a fixed random sample of REFERENCE_CONFIGS configs of space()
(Optuna's RandomSampler, seed REFERENCE_SEED), scored at full length (its best epoch), cached in
reference-<name>.json (tests/bench/data/ for the built-ins, else beside the benchmark's file) keyed by the
benchmark's file contents: an edit to the file computes them again.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
REFERENCE_CONFIGS = 10_000
REFERENCE_SEED = 20_201
BUILT_IN = {"lcbench": (HERE / "lcbench.py", "LCBench"), "birdtune-default": (HERE / "tables.py", "default"),
            "birdtune-tiny": (HERE / "tables.py", "tiny")}


class BadBenchmark(Exception):
    """A benchmark that cannot be loaded or lacks a part of the protocol (one line for the user)."""


def load(spec: str):
    """The benchmark `spec` names: a built-in name or FILE.py:NAME."""
    path, name = BUILT_IN.get(spec, (None, None))
    if path is None:
        if ":" not in spec:
            raise BadBenchmark(f"unknown benchmark '{spec}': give {', '.join(BUILT_IN)} or FILE.py:NAME")
        file, name = spec.rsplit(":", 1)
        path = Path(file).resolve()
    if not path.is_file():
        raise BadBenchmark(f"benchmark file {path} not found")
    module_name = f"_benchmark_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name not in sys.modules:
        sys.path.insert(0, str(path.parent))
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise BadBenchmark(f"benchmark file {path} failed to load: {type(e).__name__}: {e}") from None
    module = sys.modules[module_name]
    if not hasattr(module, name):
        raise BadBenchmark(f"{path} has no '{name}'")
    bench = getattr(module, name)
    if isinstance(bench, type) or (callable(bench) and not hasattr(bench, "curves")):
        bench = bench()
    missing = [a for a in ("name", "tasks", "dev_tasks", "space", "curves") if not hasattr(bench, a)]
    if missing:
        raise BadBenchmark(f"{spec} lacks {', '.join(missing)} (see tests/bench/benchmarks.py)")
    bench.source = path
    return bench


def select_tasks(bench, spec: str | None) -> list[str]:
    """Task ids from `all`, `dev` (also when None), `held` (the tasks outside dev_tasks) or comma-separated ids,
    checked."""
    spec = spec or "dev"
    every = [str(t) for t in bench.tasks]
    dev = [str(t) for t in bench.dev_tasks]
    named = {"all": every, "dev": dev, "held": [t for t in every if t not in dev]}
    tasks = named[spec] if spec in named else [t.strip() for t in spec.split(",") if t.strip()]
    if not tasks:
        what = "held-out" if spec == "held" else repr(spec)
        raise BadBenchmark(f"{bench.name} has no {what} tasks; "
                           f"its tasks: {', '.join(every)} (development: {', '.join(dev)})")
    check_tasks(bench, tasks)
    return tasks


def check_tasks(bench, tasks: list[str]) -> None:
    bad = [t for t in tasks if t not in [str(x) for x in bench.tasks]]
    if bad:
        raise BadBenchmark(f"unknown {bench.name} task(s) {', '.join(bad)}; valid: {', '.join(map(str, bench.tasks))}")


def curves(bench, task: str, configs: list[dict], seed: int = 0, hits: dict | None = None):
    """The benchmark's curves, with its noise drawn from the replay's seed when it takes one."""
    params = inspect.signature(bench.curves).parameters
    kw = {k: v for k, v in (("seed", seed), ("hits", hits)) if k in params}
    metric, seconds = bench.curves(task, configs, **kw)
    return np.asarray(metric, float), np.asarray(seconds, float)


def random_configs(space, n: int, seed: int) -> list[dict[str, Any]]:
    """n configs drawn from a define-by-run space by Optuna's RandomSampler (conditional parameters too)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        space.define(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def reference_cache(bench, task: str) -> tuple[Path, str]:
    """Where the task's reference is cached, and its key there: a change to the benchmark's file (its digest is
    in the key) computes it again. The built-ins' references are committed with them; another benchmark's go
    beside its file."""
    source = getattr(bench, "source", None)
    cache = (DATA if source is None or Path(source).parent == HERE else Path(source).parent) / f"reference-{bench.name}.json"
    digest = hashlib.sha1(Path(source).read_bytes()).hexdigest()[:12] if source else "none"
    return cache, f"{task}:{REFERENCE_CONFIGS}:{REFERENCE_SEED}:{digest}"


def reference(bench, task: str) -> tuple[float, float]:
    """(best, median) full-length quality over the fixed random sample of the task's configs; cached."""
    cache, key = reference_cache(bench, task)
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        if getattr(bench, "reference", None) is not None:  # a benchmark that knows its own (a recorded table)
            best, median = bench.reference(task)
        else:
            configs = random_configs(bench.space(), REFERENCE_CONFIGS, REFERENCE_SEED)
            q = np.concatenate([curves(bench, task, configs[i:i + 500])[0].max(axis=1)
                                for i in range(0, len(configs), 500)])
            best, median = float(q.max()), float(np.median(q))
        cache.parent.mkdir(parents=True, exist_ok=True)
        # other processes (a replay's, a peer recording's) may add theirs at the same moment: one at a time,
        # each re-reading what is there, and the file replaced whole, so a reader never sees half of it
        with open(cache.with_name(cache.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = json.loads(cache.read_text()) if cache.is_file() else {}
            known[key] = [float(best), float(median)]
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
            os.replace(tmp, cache)
    best, median = known[key]
    if not (math.isfinite(best) and math.isfinite(median)) or best <= median:
        raise BadBenchmark(f"{bench.name} task {task}: its reference best {best} is not above its median {median}")
    return float(best), float(median)
