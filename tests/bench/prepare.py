"""Windows/s of `core.prepare` against a plain per-window librosa loop, on 32 kHz OGG Vorbis birdsong.

    python tests/bench/prepare.py [--recordings 24] [--seconds 45] [--repeats 2] [--workers 2]

The recordings are real bird calls (Debian's tuxpaint-stamps-default, see tests/birdsong.py) joined
into BirdCLEF-like 32 kHz OGG files. Rows, each timed in one process with one thread, interleaved:
- the plain loop: per window librosa.load(offset, duration) + melspectrogram + power_to_db + min-max
  uint8 + PIL PNG save, as a notebook would write it;
- birdtune: core.prepare's per-recording work (decode once, windows, spectrogram, cv2 PNG, marker).
Then `python -m core.prepare --workers N` end to end on the same files. Target (issue 12): >= 4x the
plain loop and >= 60 windows/s per process. Not collected by pytest.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import birdsong  # noqa: E402
from core import audio, prepare  # noqa: E402

BIRDCLEF_2023_WINDOWS = 131_000  # about: 16,941 recordings cut into 5-s windows


def make_corpus(root: Path, n: int, seconds: float, seed: int = 0) -> list[prepare.Job]:
    rng = np.random.default_rng(seed)
    names = [k for k in birdsong.tuxpaint_calls() if k != birdsong.SILENT]
    jobs = []
    for i in range(n):
        label = names[i % len(names)]
        parts, total = [], 0
        while total < seconds * 32000:
            c = birdsong.clip(names[int(rng.integers(len(names)))]) * rng.uniform(0.3, 1.0)
            parts += [c, np.zeros(int(rng.uniform(0.2, 2.0) * 32000), np.float32)]
            total += len(c) + len(parts[-1])
        y = np.concatenate(parts)[: int(seconds * 32000)].astype(np.float32)
        path = root / "train_audio" / label / f"XC{i}.ogg"
        path.parent.mkdir(parents=True, exist_ok=True)
        birdsong.write(path, y, 32000)
        jobs.append(prepare.Job(label, f"{label}/XC{i}.ogg", str(path), f"XC{i}"))
    return jobs


def plain_loop(jobs: list[prepare.Job], out: Path, spec: audio.Spectrogram) -> int:
    import librosa
    import soundfile as sf
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for job in jobs:
        duration = sf.info(job.source).duration
        for k in range(max(1, int(duration // spec.window_s))):
            y, _ = librosa.load(job.source, sr=spec.sample_rate, offset=k * spec.window_s, duration=spec.window_s)
            y = np.pad(y, (0, spec.window_samples - len(y)))
            S = librosa.feature.melspectrogram(y=y, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
                                               n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
            db = librosa.power_to_db(S, ref=np.max, top_db=spec.top_db)
            img = ((db - db.min()) / (db.max() - db.min()) * 255).astype(np.uint8)[::-1]
            Image.fromarray(img).save(out / f"{job.stem}_{k}.png")
            n += 1
    return n


def ours(jobs: list[prepare.Job], out: Path, spec: audio.Spectrogram) -> int:
    return sum(prepare.prepare_one(job, str(out), spec, 0).windows for job in jobs)


def timed(f, *args) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = f(*args)
    return n, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=24)
    p.add_argument("--seconds", type=float, default=45.0, help="length of each recording")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the table shows their medians")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="for the end-to-end row")
    args = p.parse_args()
    audio.limit_threads()
    spec = audio.Spectrogram()
    root = Path(tempfile.mkdtemp(prefix="birdtune-bench-prepare-"))
    try:
        jobs = make_corpus(root, args.recordings, args.seconds)
        print(f"{len(jobs)} recordings x {args.seconds:g} s of 32 kHz OGG Vorbis birdsong; one process, one thread")
        rates: dict[str, list[float]] = {"plain librosa loop": [], "birdtune core.prepare": []}
        for r in range(args.repeats):
            for label, f in (("plain librosa loop", plain_loop), ("birdtune core.prepare", ours)):
                out = root / f"out-{r}-{label[:5]}"
                n, s = timed(f, jobs, out, spec)
                rates[label].append(n / s)
                shutil.rmtree(out)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()) + " windows/s "
                  f"({rates['birdtune core.prepare'][-1] / rates['plain librosa loop'][-1]:.1f}x)", flush=True)
        base = float(np.median(rates["plain librosa loop"]))
        print(f"median of {args.repeats} round(s):")
        print(f"{'path':<26}{'windows/s':>11}{'x plain':>9}{'BirdCLEF 2023 (131k windows) per core':>40}")
        for label, v in rates.items():
            rate = float(np.median(v))
            print(f"{label:<26}{rate:>11.1f}{rate / base:>8.1f}x{BIRDCLEF_2023_WINDOWS / rate / 60:>33.0f} min")
        pd_meta = root / "meta.csv"
        pd_meta.write_text("primary_label,filename\n" + "".join(f"{j.label},{j.filename}\n" for j in jobs))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "core.prepare", "--audio", str(root / "train_audio"), "--metadata",
                            str(pd_meta), "--out", str(root / "Data"), "--workers", str(args.workers), "--quiet"],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            print(r.stdout + r.stderr, file=sys.stderr)
            return 1
        n = sum(1 for _ in (root / "Data" / "train_img").rglob("*.png"))
        size = sum(p.stat().st_size for p in (root / "Data" / "train_img").rglob("*.png"))
        print(f"python -m core.prepare --workers {args.workers} (whole command, interpreter start included): "
              f"{n} windows in {wall:.1f} s = {n / wall:.1f} windows/s; {size / n / 1e3:.1f} kB per PNG")
        per_core = float(np.median(rates["birdtune core.prepare"]))
        print(f"BirdCLEF 2023, ~{BIRDCLEF_2023_WINDOWS:,} windows: ~{BIRDCLEF_2023_WINDOWS / per_core / 60:.0f} min on one "
              f"core, ~{BIRDCLEF_2023_WINDOWS / per_core / 16 / 60:.1f} min on 16 (if it scales with cores); "
              f"~{BIRDCLEF_2023_WINDOWS * size / n / 1e9:.1f} GB of PNGs")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
