"""What many tests share: the environment of the subprocesses they start, the search runner, free ports,
whether a port answers, waiting for a condition."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
FAULTS = Path(__file__).resolve().parent / "faults.py"
CHAOS = Path(__file__).resolve().parent / "stops.py"


def run_module(module: str, *args, cwd=None, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in the tests' environment, finished, its output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=env or ENV, cwd=cwd, timeout=timeout)


def run_script(path, *args, cwd=None, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    """`python PATH ARGS` (a benchmark script) in the tests' environment, as run_module."""
    return subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                          env=env or ENV, cwd=cwd, timeout=timeout)


def search(*args, fault: str | None = None, fault_dir=None, chaos: str | None = None, timeout: float = 400,
           popen: bool = False, **kw):
    """`python -m search.run --space smoke --no-dashboard ARGS` (or tests/faults.py with a fault to inject, or
    tests/stops.py with a moment to stop the driver at, keeping its counts in fault_dir): the finished process,
    or with popen=True the running one (stdout and stderr merged)."""
    cmd = ([sys.executable, str(FAULTS), fault, str(fault_dir), "--"] if fault else
           [sys.executable, str(CHAOS), chaos, str(fault_dir), "--"] if chaos else [sys.executable, "-m", "search.run"])
    cmd += [*(["--space", "smoke"] if "--space" not in args and "--resume" not in args else []), "--no-dashboard",
            *map(str, args)]
    env = kw.pop("env", ENV)
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kw)


def _ephemeral() -> tuple[int, int]:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# Ports handed to servers the tests start: below the kernel's ephemeral range (where every outgoing
# connection takes its local port, so a port found free there can be taken before the server binds it,
# as a Ray node's did once in CI) and above Ray's default worker ports (10002-19999). 20000-23999 holds
# the worker-port blocks of test nodes (worker_ports), the rest single ports.
_SINGLE = (24000, min(_ephemeral()[0], 65536) - 1)
_BLOCKS = (20000, 24000)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...: under pytest-xdist, its own share of each
if _WORKER.startswith("gw") and _SINGLE[1] > _SINGLE[0]:
    _i, _n = int(_WORKER[2:]), max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
    _SINGLE = (_SINGLE[0] + (_SINGLE[1] - _SINGLE[0]) * _i // _n, _SINGLE[0] + (_SINGLE[1] - _SINGLE[0]) * (_i + 1) // _n - 1)
    _BLOCKS = (_BLOCKS[0] + (_BLOCKS[1] - _BLOCKS[0]) * _i // _n, _BLOCKS[0] + (_BLOCKS[1] - _BLOCKS[0]) * (_i + 1) // _n)
_taken: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once), outside the ephemeral range and never
    the same twice in one test session."""
    import random

    lo, hi = _SINGLE
    if hi <= lo:  # an unusual ip_local_port_range: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    for _ in range(1000):
        port = random.randint(lo, hi)
        if port not in _taken and _bindable(port):
            _taken.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {lo}-{hi}")


def worker_ports(n: int = 200) -> tuple[int, int]:
    """A block of n free ports for one Ray node's workers (--min-worker-port/--max-worker-port)."""
    import random

    starts = list(range(_BLOCKS[0], _BLOCKS[1] - n + 1, n))
    random.shuffle(starts)
    for start in starts:
        block = range(start, start + n)
        if not _taken.intersection(block) and all(_bindable(p) for p in block):
            _taken.update(block)
            return start, start + n - 1
    raise RuntimeError(f"no block of {n} free loopback ports in {_BLOCKS[0]}-{_BLOCKS[1] - 1}")


def listening(port: int) -> bool:
    """Whether something accepts connections on this loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def read_table(source):
    """A table a search wrote as CSV (trials.csv, curves.csv, revalidation.csv; a path or a file object), its
    trial ids as text: Ray's ids are 8 hex digits, and one of decimal digits alone (about 1 in 40) would
    otherwise be read as a number, unequal to the same trial's id anywhere else."""
    import pandas as pd

    return pd.read_csv(source, dtype={"trial_id": str})


def wait_for(predicate, timeout: float, every: float = 0.5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def stop_after(cfg, data, folder, epochs_done: int):
    """A core.engine.fit run of cfg interrupted after `epochs_done` epochs (its report raises, as a kill
    would); returns its folder, to resume from."""
    import pytest

    from core import engine

    class Stop(Exception):
        pass

    def report(m, d):
        if m["epoch"] == epochs_done:
            raise Stop

    with pytest.raises(Stop):
        engine.fit(cfg.replace(out_dir=str(folder)), report, data=data)
    return folder


def label_table(counts: dict[int, int]):
    """A shuffled table of counts[label] rows per label (image_path, label), for the resampling and fold tests."""
    import numpy as np
    import pandas as pd

    rows = [dict(image_path=f"img_{lab}_{k}.png", label=lab) for lab, n in counts.items() for k in range(n)]
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)
    return df


def label_images(n=20, classes=4):
    """n small random grayscale images and their labels 0..classes-1, for the dataset tests."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 8, 12), dtype=np.uint8)
    labels = np.arange(n) % classes
    return images, labels


def scored_trials(n: int = 8):
    """A trials table and its curves: n trials of the smoke space whose score lr alone drives (drop_rate
    uncorrelated), odd ones completed at 3 epochs, even ones stopped at 1."""
    import pandas as pd

    rows, curves = [], []
    for i in range(n):
        lr, drop = 1e-3 * (1 + i), 0.05 * ((5 * i) % n)  # drop_rate uncorrelated with lr
        score = 0.5 + 20 * lr  # driven by lr only
        status = "completed" if i % 2 else "stopped_early"
        rows.append(dict(trial_id=f"t{i}", trial_index=i, lr=lr, drop_rate=drop, best_cmap=score, status=status))
        curves += [dict(trial_id=f"t{i}", trial_index=i, epoch=e, cmap=score - (3 - e) / 100)
                   for e in range(1, (3 if i % 2 else 1) + 1)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def smoke_spec(**changes):
    """A SearchSpec of the smoke space as search.yaml would hold it (3 epochs, rungs 1 and 2, 2 trials)."""
    import dataclasses

    from search.spec import SearchSpec

    spec = SearchSpec(space="smoke", max_t=3, grace_period=1, reduction_factor=2, num_samples=2,
                      searched=["lr", "drop_rate"], points=[dict(lr=1e-2, drop_rate=0.3)], seed=0, cpus_per_trial=2,
                      gpus_per_trial=0.0, searcher="tpe", scheduler="asha", revalidate_top=0, revalidate_folds=[],
                      study=None, base={"epochs": 3, "batch_size": 16, "lr": 3e-4, "drop_rate": 0.3})
    return dataclasses.replace(spec, **changes)


def image_csv(folder: Path, n: int = 40, shape=(16, 24)) -> Path:
    """folder/train.csv over n random grayscale PNGs in folder/img (labels k % 3, folds k % 2)."""
    import cv2
    import numpy as np
    import pandas as pd

    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for k in range(n):
        cv2.imwrite(str(folder / "img" / f"x{k}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    pd.DataFrame(dict(image_path=[f"img/x{k}.png" for k in range(n)], label=[k % 3 for k in range(n)],
                      fold=[k % 2 for k in range(n)])).to_csv(folder / "train.csv", index=False)
    return folder / "train.csv"


# A benchmark of the replay's protocol (tests/bench/benchmarks.py) in a file, as a user writes one: a categorical
# and a conditional parameter, 9 epochs of 1 s; `FILE.py:make` loads it.
TOY = '''
import numpy as np
from spaces.base import Space


def define(trial):
    opt = trial.suggest_categorical("optimizer", ["sgd", "adam"])
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if opt == "sgd":  # conditional: only sgd has a momentum
        trial.suggest_float("momentum", 0.0, 0.99)
    trial.suggest_int("width", 8, 64, log=True)


class Toy:
    """Curves that rise to a ceiling set by the config: adam near lr 3e-3, sgd near lr 3e-2 with momentum 0.9."""
    name = "toy"
    tasks = ["a", "b"]
    dev_tasks = ["a"]

    def space(self):
        return Space(name="toy", description="toy", define=define, base={}, epochs=9, grace_period=1,
                     reduction_factor=3, num_samples=8, points=[{"optimizer": "adam", "lr": 1e-3, "width": 16}])

    def curves(self, task, configs):
        shift = 0.0 if task == "a" else 0.5
        out = []
        for c in configs:
            best = np.log10(3e-3 if c["optimizer"] == "adam" else 3e-2)
            ceiling = 1 - 0.3 * (np.log10(c["lr"]) - best - shift) ** 2 - 0.2 * abs(c.get("momentum", 0.9) - 0.9)
            ceiling += 0.01 * np.log2(c["width"])
            out.append(ceiling * (1 - np.exp(-np.arange(1, 10) / (1 + 2 * c["lr"] * 10))))
        return np.array(out), np.full((len(configs), 9), 1.0)


def make():
    return Toy()
'''
