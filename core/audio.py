"""Audio to spectrogram images: decode, resample, cut 5-s windows, mel dB, uint8. Shared by prepare and predict.

The settings are the BirdCLEF 2023 winners' (n_fft 2048, hop 512, 128 mels, 20-16000 Hz, power to dB with
ref = max and top_db 80, min-max to uint8 per window): a 5-s window at 32 kHz becomes exactly 128 x 313.
The numbers equal librosa's `melspectrogram` + `power_to_db` (tests/test_audio.py checks it), computed
with reused buffers and a sparse filterbank instead of librosa's general-purpose path.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError

AUDIO_EXTENSIONS = (".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3", ".aiff", ".aif")
AMIN = 1e-10  # power floor before the logarithm, as librosa's power_to_db


class AudioError(UserError):
    """A recording that cannot be used; the message is the reason (one line)."""


@dataclass(frozen=True)
class Spectrogram:
    sample_rate: int = 32000  # every recording is resampled to this rate (Hz)
    window_s: float = 5.0  # length of one image: BirdCLEF scores 5-s windows
    n_fft: int = 2048  # FFT size (samples)
    hop_length: int = 512  # samples between frames: 1 + 160000 // 512 = 313 frames per window
    n_mels: int = 128  # mel bands = image height
    fmin: float = 20.0  # lowest mel filter edge (Hz)
    fmax: float = 16000.0  # highest mel filter edge (Hz)
    top_db: float = 80.0  # dB range kept below each window's maximum

    def __post_init__(self):
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"spectrogram setting {f.name} must be > 0, got {getattr(self, f.name)}")
        if self.fmin >= self.fmax or self.fmax > self.sample_rate / 2:
            raise ValueError(f"spectrogram needs fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                             f"fmax={self.fmax}, sample_rate={self.sample_rate}")
        if self.window_samples < self.n_fft // 2 + 1:
            raise ValueError(f"window_s={self.window_s} is shorter than half an FFT ({self.n_fft} samples)")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def frames(self) -> int:
        """Image width: frames of one window (centred frames, as librosa's default)."""
        return 1 + self.window_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_mels, self.frames

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Spectrogram":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown spectrogram setting '{unknown[0]}'; valid: {', '.join(known)}")
        values = {}
        for k, v in d.items():
            want = int if known[k] == "int" else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and float(v) != int(v)):
                raise ValueError(f"spectrogram setting {k} must be {known[k]}, got {v!r}")
            values[k] = want(v)
        return cls(**values)


# --- decoding -------------------------------------------------------------------------------------
def _ogg_has_end(path: Path) -> bool:
    """Whether an Ogg file ends with a whole end-of-stream page (a cut download does not)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    at = tail.rfind(b"OggS")
    if at < 0 or len(tail) - at < 27:
        return False
    header_type, segments = tail[at + 5], tail[at + 26]
    if len(tail) - at < 27 + segments:
        return False
    body = sum(tail[at + 27:at + 27 + segments])
    return bool(header_type & 0x04) and at + 27 + segments + body == len(tail)


def decode(path: str | Path, sample_rate: int, strict: bool = True) -> np.ndarray:
    """Mono float32 samples at `sample_rate`: channels averaged, resampled with soxr (high quality).
    Raises AudioError for a missing, empty or undecodable file and, when `strict` (training data), for a
    truncated or silent one; prediction takes those as they are."""
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's errors: format not recognised, decoder failures, ...
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise AudioError(f"cannot decode: {msg.replace(str(path), path.name)}") from None
    cut = (info.frames > 0 and len(x) < info.frames) or (
        path.suffix.lower() in (".ogg", ".oga", ".opus") and not _ogg_has_end(path))
    if cut and (strict or len(x) == 0):
        raise AudioError(f"truncated: decoded {len(x) / sr:.2f} s, the file does not end where its header says")
    if len(x) == 0:
        raise AudioError("no audio samples")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.isfinite(x).all():
        raise AudioError("samples are not finite (NaN or inf)")
    if strict and not np.any(x):
        raise AudioError("silent: every sample is zero")
    if sr != sample_rate:
        x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(x)


def windows(audio: np.ndarray, window: int, min_last: int | None = None,
            max_windows: int = 0) -> tuple[np.ndarray, int]:
    """Cut (n, window) zero-padded windows; returns them and the number of samples left out.

    min_last=None (prediction): every sample lands in a window, the last one zero-padded.
    Otherwise (training data): a recording shorter than one window is padded to one window; a final
    partial window of at least `min_last` samples is padded, a shorter one dropped. `max_windows` > 0
    keeps the first that many windows (the rest counts as left out)."""
    n = len(audio)
    full, rest = divmod(n, window)
    if min_last is None or full == 0 or rest >= min_last:
        count = full + (rest > 0)
    else:
        count = full
    if max_windows:
        count = min(count, max_windows)
    used = min(n, count * window)
    out = np.zeros((count, window), np.float32)
    out.reshape(-1)[:used] = audio[:used]
    return out, n - used


# --- spectrogram ----------------------------------------------------------------------------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    mel = f / f_sp
    log = f >= min_log_hz
    mel[log] = min_log_hz / f_sp + np.log(f[log] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, math.log(6.4) / 27.0
    hz = f_sp * m
    min_log_mel = min_log_hz / f_sp
    log = m >= min_log_mel
    hz[log] = min_log_hz * np.exp(logstep * (m[log] - min_log_mel))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, Slaney-normalised: librosa.filters.mel's
    defaults (torchaudio's only with norm='slaney', mel_scale='slaney')."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class _Workspace:
    """Buffers for one window's spectrogram, reused window after window: a fresh 5 MB array per window
    costs more in page faults than the FFT itself. One per thread (threading.local)."""

    def __init__(self, s: Spectrogram):
        import scipy.sparse

        bins = s.n_fft // 2 + 1
        n = np.arange(s.n_fft)
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * n / s.n_fft)  # periodic Hann (librosa's fftbins=True)
        self.filters = scipy.sparse.csr_matrix(  # each bin feeds at most two filters: nearly all zeros
            mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.fmin, s.fmax).T)
        self.padded = np.zeros(s.window_samples + 2 * (s.n_fft // 2))
        self.frames = np.empty((s.frames, s.n_fft))
        self.spectrum = np.empty((s.frames, bins), np.complex128)
        self.re2, self.im2 = np.empty((s.frames, bins)), np.empty((s.frames, bins))
        self.power = np.empty((s.frames, bins), np.float32)


_LOCAL = threading.local()


def _workspace(s: Spectrogram) -> _Workspace:
    cache = getattr(_LOCAL, "spaces", None)
    if cache is None:
        cache = _LOCAL.spaces = {}
    if s not in cache:
        cache[s] = _Workspace(s)
    return cache[s]


def mel_db(wins: np.ndarray, s: Spectrogram) -> np.ndarray:
    """(n, window) samples -> (n, n_mels, frames) float32 dB: librosa.feature.melspectrogram (centred,
    zero-padded frames, periodic Hann, power 2, Slaney mels) then power_to_db(ref=np.max, top_db), each
    window on its own.

    The FFT runs in float64 (a float32 FFT misses librosa by more than 1e-4 dB in the quietest bands),
    the filterbank product in float32 on the squared magnitudes (tests/test_audio.py checks 1e-4 dB)."""
    ws = _workspace(s)
    out = np.empty((len(wins), s.n_mels, s.frames), np.float32)
    pad, length = s.n_fft // 2, s.window_samples
    framed = np.lib.stride_tricks.sliding_window_view(ws.padded, s.n_fft)[::s.hop_length]
    for i, samples in enumerate(wins):
        ws.padded[pad:pad + length] = samples
        np.multiply(framed, ws.window, out=ws.frames)
        np.fft.rfft(ws.frames, axis=-1, out=ws.spectrum)
        np.multiply(ws.spectrum.real, ws.spectrum.real, out=ws.re2)
        np.multiply(ws.spectrum.imag, ws.spectrum.imag, out=ws.im2)
        np.add(ws.re2, ws.im2, out=ws.power, casting="same_kind")
        mel = ws.power @ ws.filters  # (frames, n_mels)
        db = np.log10(np.maximum(mel, AMIN, out=mel), out=mel)
        db *= 10.0
        db -= max(float(db.max()), 10.0 * math.log10(AMIN))  # ref = the window's own maximum
        np.maximum(db, db.max() - s.top_db, out=db)
        out[i] = db.T
    return out


def to_uint8(db: np.ndarray) -> np.ndarray:
    """(n, n_mels, frames) dB -> uint8 images, min-max scaled per window, low frequencies at the bottom
    (row 0 is the highest band, as a spectrogram is drawn). A window of one value becomes all zeros."""
    lo = db.min(axis=(1, 2), keepdims=True)
    span = db.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (db - lo) * (255.0 / np.where(span > 0, span, 1.0)), 0.0)
    return np.ascontiguousarray(np.rint(scaled).astype(np.uint8)[:, ::-1, :])


def images(wins: np.ndarray, s: Spectrogram) -> np.ndarray:
    """(n, window) samples -> (n, n_mels, frames) uint8 spectrogram images."""
    return to_uint8(mel_db(wins, s))


def find_audio(folder: str | Path) -> list[Path]:
    """Audio files under `folder` (recursively), sorted; a file path is returned as itself."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def limit_threads() -> None:
    """One BLAS/OpenMP thread in this process: parallelism comes from processes, and results do not
    depend on the thread count."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it the variables above apply
        pass
