"""core.audio: decoding, windows, and the spectrogram against librosa on real birdsong."""
import numpy as np
import pytest
import soundfile as sf

import birdsong
from core import audio
from core.audio import AudioError, Spectrogram

librosa = pytest.importorskip("librosa")
S = Spectrogram()


def librosa_db(wins: np.ndarray, s: Spectrogram = S) -> np.ndarray:
    """The reference: librosa's melspectrogram + power_to_db(ref=np.max), one window at a time."""
    kw = dict(sr=s.sample_rate, n_fft=s.n_fft, hop_length=s.hop_length, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax)
    return np.stack([librosa.power_to_db(librosa.feature.melspectrogram(y=w, **kw), ref=np.max, top_db=s.top_db)
                     for w in wins])


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(32000, 2048, 128, 20, 16000), (22050, 1024, 64, 50, 11025),
                                                      (48000, 4096, 256, 0, 20000)])
def test_mel_filterbank_is_librosas(sr, n_fft, n_mels, fmin, fmax):
    ours = audio.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_spectrogram_equals_librosa_on_real_birdsong_within_1e_4_db():
    x = audio.decode(birdsong.birds_10s(), S.sample_rate)  # 10.13 s at 32 kHz
    call = birdsong.clip("blackbird")  # 7.9 s from 44.1 kHz
    wins = np.concatenate([audio.windows(x, S.window_samples)[0], audio.windows(call, S.window_samples)[0]])
    assert len(wins) == 5
    ours = audio.mel_db(wins, S)
    assert ours.shape == (5, 128, 313) and ours.dtype == np.float32 and S.shape == (128, 313)
    ref = librosa_db(wins)
    assert np.abs(ours - ref).max() < 1e-4
    assert ours.max() == 0.0 and ours.min() >= -80.0 and ours.min() < -79  # ref = max, top_db 80


def test_other_settings_match_librosa_too():
    s = Spectrogram(sample_rate=22050, window_s=3.0, n_fft=1024, hop_length=256, n_mels=64, fmin=50, fmax=11025,
                    top_db=60)
    wins, _ = audio.windows(birdsong.clip("lark", 22050), s.window_samples)
    ours = audio.mel_db(wins, s)
    assert ours.shape == (len(wins), 64, 1 + 66150 // 256) == (len(wins), *s.shape)
    assert np.abs(ours - librosa_db(wins, s)).max() < 1e-4


def test_uint8_images_are_min_max_scaled_per_window_with_low_frequencies_at_the_bottom():
    t = np.arange(S.window_samples) / S.sample_rate
    low = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)  # a 300 Hz tone
    quiet = 0.01 * low
    silent = np.zeros_like(low)
    img = audio.images(np.stack([low, quiet, silent]), S)
    assert img.shape == (3, 128, 313) and img.dtype == np.uint8
    assert img[0].min() == 0 and img[0].max() == 255
    assert np.array_equal(img[0], img[1])  # per-window scaling: loudness does not matter
    assert not img[2].any()  # one value everywhere: all zeros, not NaN
    brightest = int(np.argmax(img[0][:, 150]))
    assert brightest > 100  # 300 Hz is a low band: near the bottom row (127)
    db = audio.mel_db(low[None], S)[0]
    expect = np.rint((db - db.min()) / (db.max() - db.min()) * 255).astype(np.uint8)[::-1]
    assert np.array_equal(img[0], expect)


def test_windows_follow_the_training_and_prediction_rules():
    w, half = 100, 50
    for n, count, left in [(30, 1, 0), (100, 1, 0), (150, 2, 0), (149, 1, 49), (260, 3, 0), (240, 2, 40)]:
        wins, dropped = audio.windows(np.ones(n, np.float32), w, min_last=half)
        assert (len(wins), dropped) == (count, left), n
        assert wins.shape == (count, w) and wins.sum() == n - left  # zero-padded, nothing duplicated
    wins, left = audio.windows(np.ones(1000, np.float32), w, min_last=half, max_windows=3)
    assert len(wins) == 3 and left == 700
    for n, count in [(30, 1), (100, 1), (101, 2), (149, 2), (240, 3)]:  # prediction: every sample, padded
        wins, left = audio.windows(np.arange(1, n + 1, dtype=np.float32), w)
        assert len(wins) == count and left == 0 and wins.reshape(-1)[:n].tolist() == list(range(1, n + 1))


def test_decode_averages_channels_and_resamples(tmp_path):
    x = birdsong.clip("crow", 44100)
    sf.write(tmp_path / "stereo.wav", np.stack([x, 0.5 * x], 1), 44100, subtype="FLOAT")
    sf.write(tmp_path / "mono.flac", x, 44100)
    stereo = audio.decode(tmp_path / "stereo.wav", 44100)
    np.testing.assert_allclose(stereo, 0.75 * x, atol=1e-6)
    y = audio.decode(tmp_path / "mono.flac", 32000)
    assert y.dtype == np.float32 and abs(len(y) - round(len(x) * 32000 / 44100)) <= 1
    ogg = audio.decode(birdsong.tuxpaint_calls()["heron_greatblue_flying"], 32000)  # 22.05 kHz Vorbis
    assert abs(len(ogg) / 32000 - 3.02) < 0.01


def test_unusable_files_raise_one_reason_each(tmp_path):
    good = birdsong.tuxpaint_calls()["duck"]
    (tmp_path / "empty.ogg").write_bytes(b"")
    (tmp_path / "junk.ogg").write_bytes(b"\x00not audio at all" * 100)
    data = good.read_bytes()
    (tmp_path / "cut.ogg").write_bytes(data[:len(data) // 2])
    sf.write(tmp_path / "zeros.wav", np.zeros(32000, np.float32), 32000)
    cases = {tmp_path / "none.ogg": "file not found", tmp_path / "empty.ogg": "empty file",
             tmp_path / "junk.ogg": "cannot decode", tmp_path / "cut.ogg": "truncated",
             birdsong.tuxpaint_calls()[birdsong.SILENT]: "silent", tmp_path / "zeros.wav": "silent"}
    for path, reason in cases.items():
        with pytest.raises(AudioError, match=reason):
            audio.decode(path, 32000)
    # prediction takes a cut or silent recording as it is
    assert len(audio.decode(tmp_path / "cut.ogg", 32000, strict=False)) > 0
    assert not audio.decode(tmp_path / "zeros.wav", 32000, strict=False).any()
    assert len(audio.decode(good, 32000)) > 0


def test_settings_are_typed_and_checked():
    assert Spectrogram.from_dict({"n_mels": 64}).shape == (64, 313)
    assert Spectrogram.from_dict(S.to_dict()) == S
    for bad, message in [({"n_mel": 64}, "unknown spectrogram setting 'n_mel'"),
                         ({"n_mels": 64.5}, "n_mels must be int"), ({"fmax": 20000}, "fmax <= sample_rate / 2"),
                         ({"hop_length": 0}, "hop_length must be > 0"), ({"n_fft": "big"}, "n_fft must be int")]:
        with pytest.raises(ValueError, match=message):
            Spectrogram.from_dict(bad)
