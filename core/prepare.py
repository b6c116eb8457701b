"""`python -m core.prepare`: BirdCLEF audio -> the notebook's dataset (5-s spectrogram PNGs, train.csv, folds)."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from core import audio
from core.config import parse_pairs
from core.data import DATASET_FILE
from core.errors import UserError
from core.process import run_cli

REQUIRED = ("primary_label", "filename")
ERRORS_FILE = "prepare_errors.csv"
STATE_DIR = ".prepare"  # one small JSON per finished recording: what a rerun skips
IMAGES = "train_img"
SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

EXAMPLES = """examples:
  python -m core.prepare --audio train_audio --metadata train_metadata.csv --out Data
  python -m core.prepare --audio train_audio --metadata train_metadata.csv --out Data --max-windows 6 --workers 16
  python -m search.run --csv Data/train.csv --space scratch --set pretrained=false    # then search on it
"""


class PrepareError(UserError):
    """Bad input found before any work; one line, exit code 2."""


@dataclass(frozen=True)
class Job:
    label: str
    filename: str  # as in the metadata
    source: str  # absolute path under --audio
    stem: str  # the recording's name: its images' prefix and its fold group


@dataclass(frozen=True)
class Prepared:
    job: Job
    windows: int = 0
    dropped_s: float = 0.0  # final partial windows shorter than half a window
    beyond_s: float = 0.0  # audio past --max-windows
    error: str = ""


# --- input checks ---------------------------------------------------------------------------------
def read_metadata(path: str, audio_dir: str) -> tuple[list[Job], list[str]]:
    """The recordings to prepare and every class name (sorted: the competition's column order)."""
    meta, root = Path(path), Path(audio_dir)
    if not meta.is_file():
        raise PrepareError(f"metadata not found: {path}")
    if not root.is_dir():
        raise PrepareError(f"--audio {audio_dir} is not a folder")
    try:
        df = pd.read_csv(meta, dtype=str, keep_default_na=False)
    except Exception as e:
        raise PrepareError(f"cannot read metadata {path}: {str(e).splitlines()[0]}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise PrepareError(f"metadata {path} lacks column(s) {', '.join(missing)}; it needs primary_label and "
                           "filename (train_metadata.csv from the competition has both)")
    df = df[list(REQUIRED)].drop_duplicates()
    if df.empty:
        raise PrepareError(f"metadata {path} has no rows")
    blank = df[(df["primary_label"].str.strip() == "") | (df["filename"].str.strip() == "")]
    if len(blank):
        raise PrepareError(f"metadata {path}: {len(blank)} row(s) with an empty primary_label or filename")
    bad = sorted(label for label in df["primary_label"].unique() if not SAFE_LABEL.match(label))
    if bad:
        raise PrepareError(f"metadata {path}: primary_label '{bad[0]}' is not a plain name (letters, digits, "
                           f"'_', '-', '.'): it names an image folder ({len(bad)} such label(s))")
    base = root.resolve()
    jobs, escaping = [], []
    for label, filename in zip(df["primary_label"], df["filename"]):
        rel = filename.replace("\\", "/")
        source = (base / rel).resolve()
        if os.path.isabs(rel) or not source.is_relative_to(base):
            escaping.append(filename)
            continue
        jobs.append(Job(label, filename, str(source), Path(rel).stem))
    if escaping:
        raise PrepareError(f"metadata {path}: {len(escaping)} filename(s) point outside --audio {audio_dir}, "
                           f"e.g. '{escaping[0]}'; filenames must be relative paths inside it")
    seen: dict[tuple[str, str], str] = {}
    for job in jobs:
        other = seen.setdefault((job.label, job.stem), job.filename)
        if other != job.filename:
            raise PrepareError(f"metadata {path}: '{other}' and '{job.filename}' would write the same images "
                               f"({IMAGES}/{job.label}/{job.stem}_*.png); rename one")
    return sorted(jobs, key=lambda j: (j.label, j.stem)), sorted(df["primary_label"].unique())


def settings_text(spec: audio.Spectrogram, folds: int, seed: int, max_windows: int, classes: list[str]) -> str:
    return yaml.safe_dump({"spectrogram": spec.to_dict(), "image": list(spec.shape), "max_windows": max_windows,
                           "folds": folds, "seed": seed, "classes": classes}, sort_keys=False)


def check_output(out: Path, spec: audio.Spectrogram, max_windows: int) -> bool:
    """Whether `out` holds an earlier run of this same dataset (to resume); refuses another dataset."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise PrepareError(f"--out {out} is a file, not a folder")
    settings = out / DATASET_FILE
    if not settings.is_file():
        if any(out.iterdir()):
            raise PrepareError(f"--out {out} already holds files not made by core.prepare (no {DATASET_FILE}); "
                               "choose an empty or new folder")
        return False
    old = yaml.safe_load(settings.read_text()) or {}
    for key, was, now in [(f"spectrogram {k}", old.get("spectrogram", {}).get(k), v)
                          for k, v in spec.to_dict().items()] + [("--max-windows", old.get("max_windows"), max_windows)]:
        if was != now:
            raise PrepareError(f"--out {out} holds a dataset made with other settings ({key} {was}, now {now}); "
                               "use another --out, or the same settings to continue it")
    return True


# --- one recording --------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _marker(out: Path, job: Job) -> Path:
    return out / STATE_DIR / job.label / f"{job.stem}.json"


def _source_id(job: Job) -> dict[str, int]:
    st = os.stat(job.source)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def finished(out: Path, job: Job) -> Prepared | None:
    """The outcome of an earlier run for this recording, if it finished and its file is unchanged."""
    marker = _marker(out, job)
    try:
        state = json.loads(marker.read_text())
        if state["filename"] != job.filename or state["source"] != _source_id(job):
            return None
    except (OSError, ValueError, KeyError):
        return None
    return Prepared(job, state["windows"], state["dropped_s"], state["beyond_s"])


def prepare_one(job: Job, out: str, spec: audio.Spectrogram, max_windows: int) -> Prepared:
    """Decode, cut, render and write one recording's PNGs, then its marker; errors become the outcome."""
    import cv2

    try:
        samples = audio.decode(job.source, spec.sample_rate)
    except audio.AudioError as e:
        return Prepared(job, error=str(e))
    window = spec.window_samples
    wins, left = audio.windows(samples, window, min_last=window // 2, max_windows=max_windows)
    full = len(samples) // window
    # left-out audio: a final partial under half a window is "dropped"; past --max-windows is "beyond"
    partial_dropped = len(samples) - full * window if (full and len(samples) - full * window < window // 2) else 0
    beyond = max(0, left - partial_dropped)
    folder = Path(out) / IMAGES / job.label
    folder.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(audio.images(wins, spec)):
        ok, png = cv2.imencode(".png", img)
        if not ok:
            return Prepared(job, error="PNG encoding failed")
        _write_atomic(folder / f"{job.stem}_{k}.png", png.tobytes())
    pattern = re.compile(rf"^{re.escape(job.stem)}_(\d+)\.png$")
    for old in folder.glob(f"{job.stem}_*.png"):  # images of an earlier, longer version of this file
        m = pattern.match(old.name)
        if m and int(m.group(1)) >= len(wins):
            old.unlink()
    result = Prepared(job, len(wins), round(partial_dropped / spec.sample_rate, 4), round(beyond / spec.sample_rate, 4))
    marker = _marker(Path(out), job)
    marker.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(marker, json.dumps({"filename": job.filename, "source": _source_id(job), "windows": result.windows,
                                      "dropped_s": result.dropped_s, "beyond_s": result.beyond_s}).encode())
    return result


# --- the whole dataset ----------------------------------------------------------------------------
def assign_folds(table: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """StratifiedGroupKFold on label with group = recording: a recording's windows share one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(table), -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has only N members": counted in the summary
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(table)), table["label"], table["group"])):
            fold[val] = k
    return fold


def build_table(outcomes: list[Prepared], classes: list[str]) -> pd.DataFrame:
    index = {name: i for i, name in enumerate(classes)}
    rows = [(f"{IMAGES}/{o.job.label}/{o.job.stem}_{k}.png", index[o.job.label], o.job.label, o.job.stem)
            for o in sorted(outcomes, key=lambda o: (o.job.label, o.job.stem)) if not o.error
            for k in range(o.windows)]
    return pd.DataFrame(rows, columns=["image_path", "label", "label_name", "group"])


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    spec = _checked_settings(args)
    jobs, classes = read_metadata(args.metadata, args.audio)
    out = Path(args.out)
    check_output(out, spec, args.max_windows)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / DATASET_FILE, settings_text(spec, args.folds, args.seed, args.max_windows, classes).encode())
    for stale in [*(out / IMAGES).rglob(".*.tmp*"), *(out / STATE_DIR).rglob(".*.tmp*")]:  # a killed run's halves
        stale.unlink(missing_ok=True)
    done = {job: finished(out, job) for job in jobs}
    todo = [job for job in jobs if done[job] is None]
    reused = len(jobs) - len(todo)
    print(f"birdtune: {len(jobs)} recordings of {len(classes)} classes in {args.metadata}"
          + (f"; {reused} already prepared in {out}, {len(todo)} to go" if reused else "")
          + f"; {args.workers} worker process(es)", flush=True)
    done.update(_prepare_all(todo, out, spec, args))
    outcomes = [done[job] for job in jobs]
    table = _write_table(outcomes, classes, out, args)
    if table is None:
        return 1
    _print_summary(outcomes, table, classes, spec, out, args, time.time() - t0)
    return 0


def _checked_settings(args: argparse.Namespace) -> audio.Spectrogram:
    """The spectrogram settings of --set, and the numbers on the command line checked."""
    try:
        spec = audio.Spectrogram.from_dict(_parse_sets(args.set))
    except ValueError as e:  # an unknown or out-of-range setting
        raise PrepareError(f"--set: {e}") from None
    if args.folds < 2:
        raise PrepareError("--folds must be >= 2")
    if args.max_windows < 0:
        raise PrepareError("--max-windows must be >= 0 (0 keeps every window)")
    if args.workers < 1:
        raise PrepareError("--workers must be >= 1")
    return spec


def _prepare_all(todo: list[Job], out: Path, spec: audio.Spectrogram, args: argparse.Namespace) -> dict[Job, Prepared]:
    """Every recording still to prepare, in --workers processes, with a progress bar."""
    from tqdm.auto import tqdm

    work = partial(prepare_one, out=str(out), spec=spec, max_windows=args.max_windows)
    bar = tqdm(total=len(todo), unit="rec", desc="prepare", disable=None if not args.quiet else True)
    if args.workers == 1 or len(todo) <= 1:
        audio.limit_threads()
        results, pool = (work(job) for job in todo), None
    else:
        pool = ProcessPoolExecutor(min(args.workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=audio.limit_threads)
        results = pool.map(work, todo, chunksize=max(1, min(16, len(todo) // (8 * args.workers))))
    done = {}
    try:
        for result in results:
            done[result.job] = result
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done


def _write_table(outcomes: list[Prepared], classes: list[str], out: Path, args: argparse.Namespace) -> pd.DataFrame | None:
    """prepare_errors.csv, then train.csv with its folds (last: its presence means the dataset is whole); None
    (after one line on stderr) when nothing usable is left."""
    failed = [o for o in outcomes if o.error]
    errors = pd.DataFrame([(o.job.filename, o.job.label, o.error) for o in failed],
                          columns=["filename", "primary_label", "reason"]).sort_values("filename")
    _write_atomic(out / ERRORS_FILE, errors.to_csv(index=False).encode())
    table = build_table(outcomes, classes)
    if table.empty:
        print(f"error: nothing usable: all {len(outcomes)} recordings were skipped (reasons in {out / ERRORS_FILE})",
              file=sys.stderr)
        return None
    if table["group"].nunique() < args.folds:
        print(f"error: only {table['group'].nunique()} usable recordings, fewer than --folds {args.folds}; "
              "lower --folds", file=sys.stderr)
        return None
    table["fold"] = assign_folds(table, args.folds, args.seed)
    _write_atomic(out / "train.csv", table.to_csv(index=False).encode())
    return table


def _print_summary(outcomes: list[Prepared], table: pd.DataFrame, classes: list[str], spec: audio.Spectrogram,
                   out: Path, args: argparse.Namespace, seconds: float) -> None:
    failed = [o for o in outcomes if o.error]
    groups = table.groupby("label_name")["group"].nunique()
    few, absent = int((groups < args.folds).sum()), len(classes) - len(groups)
    dropped = sum(o.dropped_s for o in outcomes)
    beyond = sum(o.beyond_s for o in outcomes)
    size = sum(p.stat().st_size for p in (out / IMAGES).rglob("*.png"))
    h, w = spec.shape
    print(f"prepared {len(outcomes) - len(failed)} of {len(outcomes)} recordings -> {len(table)} windows ({h}x{w} PNGs, "
          f"{size / 1e6:.1f} MB) in {len(groups)} of {len(classes)} classes; dropped {dropped:.1f} s (final parts "
          f"under {spec.window_s / 2:g} s)" + (f", {beyond:.1f} s past --max-windows" if beyond else "")
          + f"; {len(failed)} skipped" + (f" (reasons in {out / ERRORS_FILE})" if failed else "")
          + f"; {few} species with fewer recordings than {args.folds} folds" + (f", {absent} with none" if absent else "")
          + f"; {seconds:.1f} s", flush=True)
    print(f"wrote {out / 'train.csv'}; next: python -m search.run --csv {out / 'train.csv'} --space scratch "
          "(or --space finetune --set init_checkpoint=<bird-pretrained checkpoint>)")


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """--set's spectrogram settings, each value read as YAML (a number, mostly)."""
    values: dict[str, Any] = {}
    for key, raw in parse_pairs(items):
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise PrepareError(f"--set {key}={raw}: the value is not a number") from None
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.prepare", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", required=True, help="folder the metadata's filenames are relative to (train_audio)")
    p.add_argument("--metadata", required=True, help="CSV with primary_label and filename (train_metadata.csv)")
    p.add_argument("--out", required=True, help="dataset folder: train.csv, train_img/, prepare.yaml")
    p.add_argument("--folds", type=int, default=5, help="StratifiedGroupKFold splits (default 5)")
    p.add_argument("--seed", type=int, default=42, help="random_state of the fold split (default 42)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    p.add_argument("--max-windows", type=int, default=0, metavar="N", help="keep the first N windows per recording")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"spectrogram setting ({', '.join(audio.Spectrogram().to_dict())})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return run_cli(run, p.parse_args(argv))


if __name__ == "__main__":
    from core.process import finish

    finish(main())
