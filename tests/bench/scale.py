"""A search at BirdCLEF 2023's size: memory of the machine, the driver and each trial, and time to the first
batch, for a first search (which decodes) and a second one on the same CSV (which reuses the image cache).

    python tests/bench/scale.py [--windows 131000] [--classes 264] [--root DIR] [--trials 2]
                                [--time-budget 60] [--baseline-windows 2000] [--json FILE]

Builds (once, cached under --root) a synthetic data set in the notebook's CSV format: `windows` grayscale
128 x 313 PNGs (one 5-second window each) in `classes` classes with a long tail and 5 folds, written in
parallel. Then runs, one after the other on this machine:

1. a search on a small set of the same shape (--baseline-windows): what one training process of this
   model needs, to compare each trial's private memory with;
2. a bad flag on the full CSV (--set fold=9): the time to the refusal, which must come before decoding;
3. the first search on the full CSV, its image cache removed beforehand: decoding, start -> first batch;
4. a second search on the same CSV: image preparation (the cache checked, nothing decoded), first batch.

Each search is `python -m search.run --space scratch --set pretrained=false --epochs 1 --num-samples
TRIALS --time-budget S` (trials cut by the budget). Memory is sampled every 0.5 s from /proc: the
machine's used + shared memory as `free` counts them (the page cache is not counted), and the driver's and
every trial process's USS (private pages), PSS and anonymous memory from /proc/PID/smaps_rollup. Where CUDA
exists, a 4-trial search with --gpus-per-trial 0.25 is measured too. Prints one table with the ratios and
the issue's targets. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

H, W, FOLDS = 128, 313, 5
MARKS = "BIRDTUNE_BENCH_MARKS"  # folder where each trial process notes the time of its first batch


# --- the data set ------------------------------------------------------------------------------
def _labels(n: int, classes: int) -> np.ndarray:
    """A long tail: class c gets a share proportional to (c + 1)^-0.8, every class at least 2 windows."""
    share = (np.arange(classes) + 1.0) ** -0.8
    counts = 2 + np.floor(share / share.sum() * (n - 2 * classes)).astype(int)
    counts[0] += n - counts.sum()
    return np.repeat(np.arange(classes), counts)[:n]


def _write(job: tuple[int, int, str]) -> None:
    import cv2

    i, label, path = job
    rng = np.random.default_rng(i)
    img = (rng.random((H, W), np.float32) * 48).astype(np.uint8)  # background noise
    row, start = (label * 7) % (H - 12) + 2, int(rng.integers(0, W - 80))
    img[row:row + 10, start:start + 80] += np.uint8(140)  # the class's call: a band at its pitch
    cv2.imwrite(path, img)


def make_dataset(root: Path, n: int, classes: int) -> Path:
    """The CSV of n windows under root (written once; a finished set has its CSV, a half-written one not)."""
    csv = root / "train.csv"
    if csv.is_file():
        return csv
    import pandas as pd
    from tqdm.auto import tqdm

    labels = _labels(n, classes)
    rel = [f"train_images/{lab:03d}/{i:06d}.png" for i, lab in enumerate(labels)]
    for lab in range(classes):
        (root / "train_images" / f"{lab:03d}").mkdir(parents=True, exist_ok=True)
    jobs = [(i, int(lab), str(root / r)) for i, (lab, r) in enumerate(zip(labels, rel))]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for _ in tqdm(pool.map(_write, jobs, chunksize=256), total=n, desc=f"writing {n} PNGs", disable=None):
            pass
    pd.DataFrame(dict(image_path=rel, label=labels, label_name=[f"sp{lab:03d}" for lab in labels],
                      group=[f"rec{i // 12:06d}" for i in range(n)], fold=np.arange(n) % FOLDS)
                 ).to_csv(csv.with_suffix(".tmp"), index=False)
    os.replace(csv.with_suffix(".tmp"), csv)
    size = sum(f.stat().st_size for f in (root / "train_images").rglob("*.png"))
    print(f"scale: wrote {n} PNGs ({size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return csv


# --- measuring ---------------------------------------------------------------------------------
def machine_used() -> int:
    """Used + shared bytes as `free` counts them: total - free - buffers - cache - reclaimable slab + shmem."""
    info = {k: int(v.split()[0]) * 1024 for k, v in
            (line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())}
    return (info["MemTotal"] - info["MemFree"] - info["Buffers"] - info["Cached"] - info["SReclaimable"]
            + info["Shmem"])


def smaps(pid: int) -> dict[str, int]:
    """uss, pss, rss, anon bytes of a process (0s if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    kb = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return dict(uss=kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0), pss=kb.get("Pss", 0),
                rss=kb.get("Rss", 0), anon=kb.get("Anonymous", 0))


def trial_pids() -> list[int]:
    """Ray worker processes running a trial (their title is ray::ImplicitFunc...)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::ImplicitFunc"):
                out.append(int(d.name))
    return out


class Sampler(threading.Thread):
    def __init__(self, driver: int, marks: Path):
        super().__init__(daemon=True)
        self.driver, self.marks, self.stop = driver, marks, threading.Event()
        self.base = machine_used()
        self.peak = self.base
        self.driver_before, self.driver_after = {}, {}  # max of each figure before / after the first batch
        self.trials: dict[int, dict[str, int]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, machine_used())
            after = any(self.marks.iterdir())
            target = self.driver_after if after else self.driver_before
            for k, v in smaps(self.driver).items():
                target[k] = max(target.get(k, 0), v)
            for pid in trial_pids():
                mem = smaps(pid)
                seen = self.trials.setdefault(pid, {})
                for k, v in mem.items():
                    seen[k] = max(seen.get(k, 0), v)
            self.stop.wait(0.5)


def run_search(csv: Path, args: argparse.Namespace, trials: int, out: Path, extra: list[str] = ()) -> dict:
    """One search in a subprocess, sampled; its figures."""
    marks = out / "marks"
    shutil.rmtree(marks, ignore_errors=True)
    marks.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--_search", "--", "--space", "scratch", "--csv", str(csv),
           "--set", "pretrained=false", "--epochs", "1", "--num-samples", str(trials),
           "--time-budget", str(args.time_budget), "--no-dashboard", "--storage-path", str(out / "results"), *extra]
    env = {**os.environ, MARKS: str(marks), "PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    sampler = Sampler(proc.pid, marks)
    sampler.start()
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        if line.startswith("birdtune:") or "error" in line.lower():
            print("   ", line.rstrip()[:160], flush=True)
    code = proc.wait()
    sampler.stop.set()
    sampler.join()
    firsts = sorted(float(p.read_text()) for p in marks.iterdir())
    prep = next(filter(None, (re.search(r"(?:decoded in|checked in) ([\d.]+) s", ln) for ln in lines)), None)
    return dict(code=code, seconds=time.time() - t0, first_batch_s=(firsts[0] - t0) if firsts else None,
                trials_started=len(firsts), prep_s=float(prep.group(1)) if prep else None,
                reused=any("reused the image cache" in ln for ln in lines),
                machine_peak=sampler.peak - sampler.base, machine_base=sampler.base,
                driver_before=sampler.driver_before, driver_after=sampler.driver_after,
                trial_uss=max((t.get("uss", 0) for t in sampler.trials.values()), default=0),
                trial_pss=max((t.get("pss", 0) for t in sampler.trials.values()), default=0),
                trial_anon=max((t.get("anon", 0) for t in sampler.trials.values()), default=0),
                trial_processes=len(sampler.trials), tail=lines[-5:])


def bad_flag(csv: Path, out: Path) -> dict:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "search.run", "--space", "scratch", "--csv", str(csv), "--set",
                        "pretrained=false", "--set", "fold=9", "--no-dashboard", "--storage-path", str(out / "bad")],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return dict(code=p.returncode, seconds=time.time() - t0, line=p.stderr.strip().splitlines()[-1:])


# --- inside the search subprocess --------------------------------------------------------------
def _marking_loss(config: dict, name: str, smoothing: float):
    import torch

    from core.losses import build_loss

    class Marked(torch.nn.Module):
        """The search's loss, noting the time of its first call (the trial's first batch)."""

        def __init__(self):
            super().__init__()
            self.inner, self.marked = build_loss(name, smoothing), False

        def forward(self, *a, **k):
            if not self.marked:
                self.marked = True
                Path(os.environ[MARKS], f"first-{os.getpid()}-{time.time_ns()}").write_text(repr(time.time()))
            return self.inner(*a, **k)

    return Marked()


def _search(argv: list[str]) -> int:
    from search import run
    from search.trainable import TrialHooks

    return run.main(argv, hooks=TrialHooks(loss_factory=_marking_loss))


# --- the table ---------------------------------------------------------------------------------
def gb(x) -> str:
    return "-" if x is None else f"{x / 1e9:.2f} GB"


def sec(x) -> str:
    return "-" if x is None else f"{x:.1f} s"


def main() -> int:
    if "--_search" in sys.argv:
        return _search(sys.argv[sys.argv.index("--") + 1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=131_000)
    ap.add_argument("--classes", type=int, default=264)
    ap.add_argument("--root", default=str(Path(os.environ.get("BIRDTUNE_CACHE", Path.home() / ".cache/birdtune"))
                                          / "scale"))
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--time-budget", type=int, default=60)
    ap.add_argument("--baseline-windows", type=int, default=2000)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.windows < 10 * args.classes or args.baseline_windows < 2 * args.classes:
        print("error: --windows must be >= 10 x --classes and --baseline-windows >= 2 x --classes", file=sys.stderr)
        return 2
    root = Path(args.root)
    big = make_dataset(root / f"w{args.windows}-c{args.classes}", args.windows, args.classes)
    small = make_dataset(root / f"w{args.baseline_windows}-c{args.classes}", args.baseline_windows, args.classes)
    work = root / "runs"
    shutil.rmtree(work, ignore_errors=True)
    data_bytes = args.windows * H * W

    print("scale: baseline search on", small, flush=True)
    base = run_search(small, args, args.trials, work / "baseline")
    print("scale: a bad flag on the full CSV", flush=True)
    bad = bad_flag(big, work)
    shutil.rmtree(big.parent / ".birdtune-cache", ignore_errors=True)  # the first search decodes
    print("scale: first search (decodes)", flush=True)
    first = run_search(big, args, args.trials, work / "first")
    print("scale: second search (reuses the cache)", flush=True)
    second = run_search(big, args, args.trials, work / "second")
    runs = {"baseline": base, "first": first, "second": second}
    import torch

    if torch.cuda.is_available():
        print("scale: 4 trials at --gpus-per-trial 0.25", flush=True)
        runs["gpu4"] = run_search(big, args, 4, work / "gpu4", ["--gpus-per-trial", "0.25"])

    rows = [("exit code", *(str(r["code"]) for r in runs.values())),
            ("trials that reached a batch", *(str(r["trials_started"]) for r in runs.values())),
            ("image preparation", *(sec(r["prep_s"]) for r in runs.values())),
            ("start -> first batch", *(sec(r["first_batch_s"]) for r in runs.values())),
            ("machine peak above start (used+shared)", *(gb(r["machine_peak"]) for r in runs.values())),
            ("driver USS once trials run", *(gb(r["driver_after"].get("uss")) for r in runs.values())),
            ("driver anonymous memory once trials run", *(gb(r["driver_after"].get("anon")) for r in runs.values())),
            ("driver USS while preparing", *(gb(r["driver_before"].get("uss")) for r in runs.values())),
            ("trial USS (max over trials)", *(gb(r["trial_uss"]) for r in runs.values())),
            ("trial anonymous memory (max)", *(gb(r["trial_anon"]) for r in runs.values())),
            ("trial PSS (max)", *(gb(r["trial_pss"]) for r in runs.values()))]
    names = [f"baseline ({args.baseline_windows})", *(f"{k} ({args.windows})" for k in list(runs)[1:])]
    width = max(len(r[0]) for r in rows)
    print(f"\ndata: {args.windows} windows x {H} x {W} = {gb(data_bytes)} decoded; machine memory before: "
          f"{gb(first['machine_base'])} used")
    print(f"{'':{width}}  " + "  ".join(f"{n:>18}" for n in names))
    for r in rows:
        print(f"{r[0]:{width}}  " + "  ".join(f"{v:>18}" for v in r[1:]))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    peak = max(first["machine_peak"], second["machine_peak"])
    trial_extra = max(first["trial_uss"], second["trial_uss"]) - base["trial_uss"]
    driver = max(first["driver_after"].get("uss", 0), second["driver_after"].get("uss", 0))
    fb1, fb2 = first["first_batch_s"], second["first_batch_s"]
    speedup = fb1 / fb2 if fb1 and fb2 else None
    checks = [
        (f"machine peak / data: {peak / data_bytes:.2f} (peak {gb(peak)} <= data + 4 GB = {gb(data_bytes + 4e9)})",
         peak <= data_bytes + 4e9),
        (f"driver USS once trials run: {gb(driver)} (<= 1 GB)", driver <= 1e9),
        (f"trial USS beyond the baseline trial's: {gb(trial_extra)} (<= 1.5 GB)", trial_extra <= 1.5e9),
        (f"second search's image preparation: {sec(second['prep_s'])} (<= 5 s), reused the cache: {second['reused']}",
         second["prep_s"] is not None and second["prep_s"] <= 5 and second["reused"]),
        (f"first batch, first / second search: {'-' if speedup is None else f'{speedup:.1f}x'} (>= 2x)",
         speedup is not None and speedup >= 2),
        (f"bad flag refused in {sec(bad['seconds'])}, exit {bad['code']}: {' '.join(bad['line'])[:90]}",
         bad["code"] == 2),
    ]
    print()
    for text, ok in checks:
        print(f"  {verdict(ok):6}  {text}")
    # what the data itself adds: the same search on the small set has the same model, trials and driver
    print(f"  {'info':6}  machine peak minus the baseline search's: {gb(peak - base['machine_peak'])} "
          f"(the data's own cost; the rest is {args.trials} training processes and the driver)")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(windows=args.windows, classes=args.classes, data_bytes=data_bytes,
                                                   runs=runs, bad_flag=bad,
                                                   checks=[dict(check=t, met=ok) for t, ok in checks]), indent=1))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
