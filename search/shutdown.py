"""How the driver's process ends: with main()'s exit code through core.process.finish, or, once the search's
storage stopped answering, at once (the message, the local Ray cluster and this process's children stopped),
as a killed driver would: --resume continues it when the storage answers again."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from search import storage
from search.spec import RunOptions


class StorageLost(RuntimeError):
    """The storage stopped answering during the search; the message says how."""


def storage_lost(options: RunOptions, problem: str) -> NoReturn:
    """The one message for a storage that stopped answering, then the process ends (also from the storage
    watch's thread, when the search's loop is itself stuck in a call to that storage)."""
    print(f"error: the storage {storage.display(options.exp)} stopped answering during the search ({problem}); "
          f"the search stopped there. When it answers again, continue with  {options.resume_command}", file=sys.stderr)
    end_process(1, at_once=True)


def end_process(code: int, at_once: bool = False) -> NoReturn:
    """End the process with main()'s exit code. With at_once (a lost storage) the local Ray cluster is stopped
    first and nothing else runs: pyarrow holds a lock while any request to the storage hangs (Ray's background
    uploads retry for minutes), which would keep the process open in its S3 finalizer."""
    if not at_once:
        from core.process import finish

        finish(code)
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
