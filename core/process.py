"""How birdtune's command-line tools end."""
from __future__ import annotations

import gc
import sys
from typing import NoReturn


def finish(code: int | None) -> NoReturn:
    """sys.exit(code), with what is still alive left to the operating system: Python's own teardown would
    otherwise walk every object torch, timm and Ray created, one by one (1 to 3 s of each command's exit,
    measured on the 2-core machine). atexit handlers (Ray's shutdown, logging's flush) still run; only
    objects caught in reference cycles are left uncollected, as the process ends anyway."""
    gc.freeze()
    sys.exit(code)


def run_cli(run, args) -> int:
    """run(args), with a user's bad input (core.errors.UserError) as one line on stderr and exit code 2."""
    from core.errors import UserError

    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
