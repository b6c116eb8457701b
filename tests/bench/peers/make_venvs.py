"""One virtual environment per peer tool, made from its pinned tests/bench/peers/<tool>/requirements.txt, never in
birdtune's own dependencies (the tools pin numpy, torch and ConfigSpace differently).

    python tests/bench/peers/make_venvs.py [--tools optuna,synetune,smac,dehb,neps] [--root DIR] [--force]

The environments go to DIR (default ~/.cache/birdtune/peers/<tool>); each gets pip, the tool and what the
replay's benchmarks read with (numpy, ONNX Runtime, pandas, pyarrow, scipy, and
Optuna, whose RandomSampler draws a benchmark's reference sample). Prints each tool's installed
version; a tool whose install fails is reported in one line and the others go on. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = {"optuna": "optuna", "synetune": "syne-tune", "smac": "smac", "dehb": "dehb", "neps": "neural-pipeline-search"}
DEFAULT_ROOT = Path(os.environ.get("BIRDTUNE_PEERS", Path.home() / ".cache" / "birdtune" / "peers"))


def python(tool: str, root: Path = DEFAULT_ROOT) -> Path:
    """The peer tool's interpreter."""
    return root / tool / "bin" / "python"


def version(tool: str, root: Path = DEFAULT_ROOT) -> str | None:
    exe = python(tool, root)
    if not exe.is_file():
        return None
    r = subprocess.run([str(exe), "-c", f"from importlib.metadata import version; print(version('{TOOLS[tool]}'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or None


def make(tool: str, root: Path, force: bool) -> str:
    venv = root / tool
    if force or not python(tool, root).is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    t0 = time.time()
    r = subprocess.run([str(python(tool, root)), "-m", "pip", "install", "-q", "-r", str(HERE / tool / "requirements.txt")],
                       capture_output=True, text=True)
    if r.returncode:
        err = [ln for ln in r.stderr.splitlines() if ln.strip() and "WARNING: Location" not in ln]
        return f"{tool}: install failed ({err[-1] if err else r.returncode})"
    return f"{tool}: {TOOLS[tool]} {version(tool, root)} in {venv} ({time.time() - t0:.0f} s)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--force", action="store_true", help="make the environments again from scratch")
    args = p.parse_args()
    bad = [t for t in args.tools.split(",") if t not in TOOLS]
    if bad:
        print(f"make_venvs: unknown tool(s) {', '.join(bad)}; choose {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    failed = 0
    for tool in args.tools.split(","):
        line = make(tool, Path(args.root), args.force)
        failed += "failed" in line
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
