"""Real bird recordings for the tests, taken from packages at test time (none is committed), and a
BirdCLEF-shaped folder built from them.

- Debian's tuxpaint-stamps-default: about 18 bird calls as OGG Vorbis (GPL-2) under TUXPAINT; `.ci/run`
  installs it. `nandou.ogg` is silent.
- the opensoundscape wheel's sample_data/birds_10s.wav (10 s of birdsong at 32 kHz, MIT): downloaded
  with `pip download --no-deps` into the test cache and unzipped, never installed.

Without them the tests that need them skip, except where BIRDTUNE_REQUIRE_AUDIO=1 (set by .ci/run):
there a missing source fails them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TUXPAINT = Path(os.environ.get("BIRDTUNE_TUXPAINT_BIRDS", "/usr/share/tuxpaint/stamps/animals/birds"))
OPENSOUNDSCAPE = "opensoundscape==0.13.2"
SILENT = "nandou"  # tuxpaint's one silent call


def _missing(message: str):
    if os.environ.get("BIRDTUNE_REQUIRE_AUDIO") == "1":
        pytest.fail(message)
    pytest.skip(message)


def tuxpaint_calls() -> dict[str, Path]:
    """{name: path} of tuxpaint's bird calls (not its spoken descriptions), the silent one included."""
    calls = {p.stem: p for p in sorted(TUXPAINT.glob("*.ogg")) if "_desc" not in p.stem} if TUXPAINT.is_dir() else {}
    if len(calls) < 10:
        _missing(f"no tuxpaint bird calls in {TUXPAINT} (apt-get install tuxpaint-stamps-default)")
    return calls


def birds_10s() -> Path:
    """opensoundscape's 10 s of birdsong, fetched once into the test cache."""
    cache = Path(os.environ.get("BIRDTUNE_CACHE", Path.home() / ".cache" / "birdtune")) / "opensoundscape"
    wav = cache / "birds_10s.wav"
    if wav.is_file():
        return wav
    cache.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", OPENSOUNDSCAPE, "-d",
                        str(cache)], capture_output=True, text=True, timeout=300)
    wheels = sorted(cache.glob("opensoundscape-*.whl"))
    if r.returncode or not wheels:
        _missing(f"pip download {OPENSOUNDSCAPE} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        wav.write_bytes(z.read("opensoundscape/sample_data/birds_10s.wav"))
    return wav


@lru_cache(maxsize=None)
def clip(name: str, sample_rate: int = 32000) -> np.ndarray:
    """A tuxpaint call as mono float32 at `sample_rate`."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(str(tuxpaint_calls()[name]), dtype="float32", always_2d=True)
    return soxr.resample(x.mean(1), sr, sample_rate).astype(np.float32)


SPECIES = ("blackbird", "crow", "duck", "lark", "seagull", "tucan")
# (seconds, sample rate, channels, format) of each species' recordings: lengths that exercise every
# window rule (shorter than 5 s, a final part >= 2.5 s kept, < 2.5 s dropped), four rates, mono and stereo
RECORDINGS = [(3.0, 32000, 1, "OGG"), (7.6, 44100, 2, "OGG"), (12.0, 22050, 1, "FLAC"), (16.0, 48000, 2, "OGG"),
              (5.0, 16000, 1, "WAV"), (11.0, 32000, 2, "OGG")]


def expected_windows(seconds: float) -> int:
    """The prepare rules: < 5 s -> 1 padded window; a final part >= 2.5 s kept, a shorter one dropped."""
    full, rest = divmod(seconds, 5.0)
    return 1 if full == 0 else int(full) + (rest >= 2.5)


def make_birdclef(root: Path, species=SPECIES, recordings=RECORDINGS, extra_rows=()) -> pd.DataFrame:
    """train_audio/<label>/XC<n>.<ext> + train_metadata.csv (with the competition's other columns) from real
    calls: each recording is its species' call repeated (with gaps) to the listed length. Returns the
    metadata with a `seconds` column."""
    import soxr

    rng = np.random.default_rng(0)
    rows, n = [], 100000
    for label in species:
        call = clip(label)
        for seconds, rate, channels, fmt in recordings:
            reps = int(np.ceil(seconds * 32000 / (len(call) + 3200))) + 1
            y = np.concatenate([np.concatenate([call * rng.uniform(0.4, 1.0), np.zeros(3200, np.float32)])
                                for _ in range(reps)])[:int(seconds * 32000)]
            y = soxr.resample(y, 32000, rate)[:int(round(seconds * rate))]
            if channels == 2:
                y = np.stack([y, 0.5 * y], 1)
            ext = {"OGG": "ogg", "FLAC": "flac", "WAV": "wav"}[fmt]
            rel = f"{label}/XC{n}.{ext}"
            n += 1
            (root / "train_audio" / label).mkdir(parents=True, exist_ok=True)
            write(root / "train_audio" / rel, y, rate, fmt)
            rows.append(dict(primary_label=label, secondary_labels="[]", type="['song']", filename=rel,
                             author="tuxpaint", rating=4.0, seconds=seconds))
    meta = pd.DataFrame(rows + list(extra_rows))
    meta.drop(columns=["seconds"]).to_csv(root / "train_metadata.csv", index=False)
    return meta


def write(path: Path, y: np.ndarray, rate: int, fmt: str = "OGG") -> None:
    """soundfile.write in blocks: libsndfile's Vorbis encoder crashes (SIGSEGV) on one large write."""
    import soundfile as sf

    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    channels = 1 if y.ndim == 1 else y.shape[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", rate, channels, subtype=subtype, format=fmt) as f:
        for start in range(0, len(y), 16384):
            f.write(y[start:start + 16384])


def soundscape(path: Path, names, gap_s: float = 0.5, sample_rate: int = 32000) -> float:
    """Concatenate calls (with gaps) into one OGG file, as a test soundscape; returns its length in seconds."""
    gap = np.zeros(int(gap_s * sample_rate), np.float32)
    y = np.concatenate([part for name in names for part in (clip(name, sample_rate), gap)])
    write(path, y, sample_rate)
    return len(y) / sample_rate
