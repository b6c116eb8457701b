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


def search(*args, fault: str | None = None, fault_dir=None, timeout: float = 400, popen: bool = False, **kw):
    """`python -m search.run --space smoke --no-dashboard ARGS` (or tests/faults.py with a fault to inject):
    the finished process, or with popen=True the running one (stdout and stderr merged)."""
    cmd = ([sys.executable, str(FAULTS), fault, str(fault_dir), "--"] if fault else [sys.executable, "-m", "search.run"])
    cmd += [*(["--space", "smoke"] if "--space" not in args and "--resume" not in args else []), "--no-dashboard",
            *map(str, args)]
    env = kw.pop("env", ENV)
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, **kw)


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts connections on this loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


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
