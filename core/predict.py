"""`python -m core.predict`: a trained model folder + soundscapes -> a BirdCLEF submission (one row per 5-s window)."""
from __future__ import annotations

import argparse
import math
import os
import queue
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from core import audio, bundle
from core.bundle import Bundle, BundleError
from core.errors import UserError
from core.process import run_cli
from core.data import resize_smallest
from core.model import build_model

ONNX_FILE = "model.onnx"
BACKENDS = ("torch", "onnx")
# Windows per model call when --batch-size is not given. On the CPU small batches run faster per window
# (their activations stay in cache); tests/bench/predict.py measures it, the README has the figures.
DEFAULT_BATCH = {"cpu": 8, "cuda": 128}

EXAMPLES = """examples:
  python -m core.predict --model results/<name>/best --audio test_soundscapes/ --out submission.csv
  python -m core.predict --model results/<name>/best --audio test_soundscapes/ --out submission.csv --backend onnx
  python -m core.predict --model results/<name>/best --export-onnx          # writes best/model.onnx only
  python -m core.predict --model results/<name>/best --export-kaggle kaggle/  # wheel + model + README for Kaggle
  python -m core.predict --model results/<name>/best-1 --model results/<name>/best-2 --audio test_soundscapes/ --out s.csv
                                                                            # an ensemble: probabilities averaged
"""


class PredictError(UserError):
    """Bad input found before predicting; one line, exit code 2."""


class Predictor:
    """Class probabilities (softmax, as the model was trained) for batches of (n, H, W) uint8 images.

    torch on the CPU runs the model traced and frozen (batch norms folded into the convolutions) in
    channels_last, faster than eager (tests/bench/predict.py); on CUDA it runs eagerly with fp16
    autocast, as training does. onnx runs model.onnx in ONNX Runtime."""

    def __init__(self, b: Bundle, device: str = "cpu", backend: str = "torch", threads: int = 0):
        self.bundle, self.backend = b, backend
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PredictError("--device cuda but torch sees no CUDA device; use --device cpu")
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.batch_size = DEFAULT_BATCH[self.device.type]
        self.model = build_model(b.config.model_name, len(b.classes), pretrained=False).eval()
        try:
            self.model.load_state_dict(b.weights)
        except RuntimeError as e:
            raise BundleError(f"model folder {b.folder}: the weights do not fit {b.config.model_name}: "
                              f"{str(e).splitlines()[0]}") from None
        self._session = None
        self._traced = None
        if backend == "onnx":
            self._session = self._onnx_session()
        else:
            self.model.to(self.device, memory_format=torch.channels_last)

    def _onnx_session(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise PredictError("--backend onnx needs ONNX Runtime: pip install -e '.[onnx]'") from None
        path = self.bundle.folder / ONNX_FILE
        if not path.is_file():
            path = export_onnx(self.model, self.bundle, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        providers = (["CUDAExecutionProvider"] if self.device.type == "cuda" else []) + ["CPUExecutionProvider"]
        return ort.InferenceSession(str(path), opts, providers=providers)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images[:, None]  # (n, 1, H, W) uint8: the model scales and repeats the channel itself
        if self._session is not None:
            logits = torch.from_numpy(self._session.run(None, {self._session.get_inputs()[0].name: x})[0])
        else:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)
            with torch.inference_mode():
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        logits = self.model(t).float()
                else:
                    logits = self._cpu_model(t)(t)
        return logits.float().softmax(-1).cpu().numpy()

    def _cpu_model(self, example: torch.Tensor):
        if self._traced is None:
            with warnings.catch_warnings():  # TorchScript's deprecation and tracer notes
                warnings.simplefilter("ignore")
                self._traced = torch.jit.freeze(torch.jit.trace(self.model, example))
        return self._traced


class Ensemble:
    """Several predictors as one: the mean of their class probabilities. Every model must share the classes
    (in order), the spectrogram settings and the image size, so one spectrogram image serves them all."""

    def __init__(self, members: list[Predictor]):
        first = members[0].bundle
        for m in members[1:]:
            b = m.bundle
            if b.classes != first.classes:
                raise PredictError(f"--model {b.folder} has other classes than --model {first.folder} "
                                   f"({len(b.classes)} vs {len(first.classes)}, or another order): an ensemble "
                                   "averages models of one class list")
            if b.spectrogram != first.spectrogram or b.config.img_size != first.config.img_size:
                raise PredictError(f"--model {b.folder} was trained on other spectrograms than --model {first.folder} "
                                   f"({_differs(first, b)}): an ensemble needs one spectrogram setting")
        self.members = members
        self.bundle, self.device, self.threads = first, members[0].device, members[0].threads
        self.batch_size = members[0].batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.mean([m(images) for m in self.members], axis=0, dtype=np.float64).astype(np.float32)


def _differs(a: Bundle, b: Bundle) -> str:
    theirs = b.spectrogram.to_dict()
    fields = [(k, v, theirs.get(k)) for k, v in a.spectrogram.to_dict().items() if theirs.get(k) != v]
    if a.config.img_size != b.config.img_size:
        fields.append(("img_size", a.config.img_size, b.config.img_size))
    return ", ".join(f"{k} {x} vs {y}" for k, x, y in fields)


def export_onnx(model: torch.nn.Module, b: Bundle, path: Path) -> Path:
    """Write the model as ONNX (input: uint8 (batch, 1, H, W) spectrograms, output: logits); where the
    model folder is read-only, into a temporary file instead."""
    h = b.config.img_size
    w = max(1, round(b.spectrogram.frames * h / b.spectrogram.n_mels))
    example = torch.zeros((2, 1, h, w) if b.spectrogram.n_mels <= b.spectrogram.frames else (2, 1, w, h), dtype=torch.uint8)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    if not os.access(path.parent, os.W_OK):
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="birdtune-onnx-")) / ONNX_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(tmp), input_names=["spectrogram"], output_names=["logits"],
                          dynamic_axes={"spectrogram": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    os.replace(tmp, path)
    print(f"birdtune: wrote {path}", flush=True)
    return path


# --- audio to windows ------------------------------------------------------------------------------
@dataclass
class Item:
    path: Path
    row_ids: list[str] = field(default_factory=list)
    images: np.ndarray | None = None
    error: str = ""


def window_ids(stem: str, count: int, window_s: float) -> list[str]:
    """`<stem>_<end second>` for each window: 5, 10, ... (a padded last window: its end rounded up)."""
    return [f"{stem}_{math.ceil(round((k + 1) * window_s, 6))}" for k in range(count)]


def load_item(path: Path, spec: audio.Spectrogram, img_size: int) -> Item:
    item = Item(path)
    try:
        samples = audio.decode(path, spec.sample_rate, strict=False)
    except audio.AudioError as e:
        item.error = str(e)
        return item
    wins, _ = audio.windows(samples, spec.window_samples)  # every sample predicted, the last window padded
    imgs = audio.images(wins, spec)
    if img_size != spec.n_mels:
        imgs = np.stack([resize_smallest(im, img_size) for im in imgs])
    item.images, item.row_ids = imgs, window_ids(path.stem, len(imgs), spec.window_s)
    return item


def prefetch(paths: list[Path], spec: audio.Spectrogram, img_size: int, depth: int = 2) -> Iterator[Item]:
    """Decode and render the next files in a background thread while the model runs (FFTs, BLAS and
    libsndfile release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for p in paths:
                if stop.is_set():
                    return
                q.put(load_item(p, spec, img_size))
        except BaseException as e:  # not a file's fault (a missing package, memory): the caller raises it
            q.put(e)
        q.put(None)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def expected_windows(paths: list[Path], window_s: float) -> int:
    import soundfile as sf

    total = 0
    for p in paths:
        try:
            total += max(1, math.ceil(sf.info(str(p)).duration / window_s - 1e-9))
        except Exception:  # undecodable: reported when its turn comes
            pass
    return total


def predict(paths: list[Path], predictor: Predictor, batch_size: int = 0, progress: bool = False):
    """(row ids, probabilities (windows, classes), {file: reason} for files skipped), batched across files
    (`batch_size` 0: the predictor's default for its device)."""
    b = predictor.bundle
    batch_size = batch_size or predictor.batch_size
    ids: list[str] = []
    probs: list[np.ndarray] = []
    errors: dict[str, str] = {}
    pending: list[np.ndarray] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=expected_windows(paths, b.spectrogram.window_s), unit="win", desc="predict",
               disable=None if progress else True)

    def flush(final: bool = False) -> None:
        nonlocal pending
        stack = np.concatenate(pending) if pending else np.zeros((0,), np.uint8)
        pending = []
        while len(stack) >= batch_size or (final and len(stack)):
            batch, stack = stack[:batch_size], stack[batch_size:]
            probs.append(predictor(batch))
            bar.update(len(batch))
        if len(stack):
            pending = [stack]

    for item in prefetch(paths, b.spectrogram, b.config.img_size):
        if item.error:
            errors[str(item.path)] = item.error
            continue
        ids += item.row_ids
        pending.append(item.images)
        flush()
    flush(final=True)
    bar.close()
    return ids, (np.concatenate(probs) if probs else np.zeros((0, len(b.classes)), np.float32)), errors


def submission(ids: list[str], probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(probs, columns=classes)
    frame.insert(0, "row_id", ids)
    return frame


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    if args.backend not in BACKENDS:
        raise PredictError(f"--backend must be one of {', '.join(BACKENDS)}")
    if args.batch_size < 0:
        raise PredictError("--batch-size must be >= 1 (or 0 for the default)")
    bundles = [bundle.load(m) for m in args.model]
    if args.export_kaggle:
        from core import kaggle

        written = kaggle.export(args.model, args.export_kaggle, args.kaggle_dataset, args.competition)
        for path in written:
            print(f"wrote {path} ({kaggle.size(path) / 1e6:.1f} MB)")
        print(f"upload {args.export_kaggle} as the Kaggle dataset '{args.kaggle_dataset}'; its README.md has the "
              "two notebook cells", flush=True)
        if not args.audio:
            return 0
    if args.export_onnx:
        for b in bundles:
            model = build_model(b.config.model_name, len(b.classes), pretrained=False)
            model.load_state_dict(b.weights)
            export_onnx(model, b, b.folder / ONNX_FILE)
        if not args.audio:
            return 0
    if not args.audio or not args.out:
        raise PredictError("--audio and --out are needed to predict (only --export-onnx and --export-kaggle work "
                           "without them)")
    if not Path(args.audio).exists():
        raise PredictError(f"--audio {args.audio} not found")
    paths = audio.find_audio(args.audio)
    if not paths:
        raise PredictError(f"no audio files ({', '.join(audio.AUDIO_EXTENSIONS)}) in {args.audio}")
    stems: dict[str, Path] = {}
    for p in paths:
        if stems.setdefault(p.stem, p) != p:
            raise PredictError(f"{stems[p.stem]} and {p} would give the same row ids ({p.stem}_5, ...); rename one")
    members = [Predictor(b, args.device, args.backend, args.threads) for b in bundles]
    predictor = members[0] if len(members) == 1 else Ensemble(members)
    b = predictor.bundle
    models = (b.config.model_name if len(members) == 1 else
              f"an ensemble of {len(members)} models ({', '.join(sorted({x.config.model_name for x in bundles}))})")
    print(f"birdtune: {len(paths)} file(s), {models} ({len(b.classes)} classes) on "
          f"{predictor.device.type} with {args.backend} ({predictor.threads} threads)", flush=True)
    ids, probs, errors = predict(paths, predictor, args.batch_size, progress=not args.quiet)
    for path, reason in errors.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    submission(ids, probs, b.classes).to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    seconds = time.time() - t0
    print(f"predicted {len(ids)} windows of {len(paths) - len(errors)} file(s) in {seconds:.1f} s "
          f"({len(ids) / max(seconds, 1e-9):.1f} windows/s)" + (f"; {len(errors)} file(s) skipped" if errors else "")
          + f"; wrote {out}", flush=True)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, action="append",
                   help="model folder: results/<name>/best (or a core.train out_dir); give it again for an ensemble "
                        "(probabilities averaged; python -m search.export results/<name> --top K writes best-1..K)")
    p.add_argument("--audio", help="an audio file or a folder of them (test_soundscapes)")
    p.add_argument("--out", help="submission CSV to write (row_id, then one column per class)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--backend", default="torch", help="torch (default) or onnx (ONNX Runtime, pip install -e '.[onnx]')")
    p.add_argument("--batch-size", type=int, default=0,
                   help=f"windows per model call (default {DEFAULT_BATCH['cpu']} on the CPU, {DEFAULT_BATCH['cuda']} on CUDA)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for the model (default: torch's, all cores)")
    p.add_argument("--export-onnx", action="store_true", help=f"write {ONNX_FILE} into the model folder")
    p.add_argument("--export-kaggle", metavar="DIR",
                   help="write DIR to upload as a Kaggle dataset: birdtune's wheel, the model folder(s) and a README "
                        "with the notebook cells for an offline submission")
    p.add_argument("--kaggle-dataset", default="birdtune-model", help="the dataset name the README's paths use")
    p.add_argument("--competition", default="birdclef-2025", help="the competition folder the README's paths use")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return run_cli(run, p.parse_args(argv))


if __name__ == "__main__":
    from core.process import finish

    finish(main())
