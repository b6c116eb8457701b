"""Windows/s of `core.predict` end to end (decode + spectrogram + model) on soundscapes, one run.

    python tests/bench/predict.py [--model tf_efficientnet_b0] [--soundscapes 2] [--minutes 4] [--threads 2]
                                  [--device cpu|cuda] [--repeats 2]

The soundscapes are real bird calls (tests/birdsong.py) joined into 32 kHz OGG files; the model has
random weights (speed does not depend on them) and BirdCLEF 2023's 264 classes at 128 x 313. Rows:
- model alone, at batch 64 and at predict's CPU default: PyTorch eager NCHW, eager channels_last, traced + frozen (what predict runs on
  the CPU), ONNX Runtime;
- end to end: a plain loop (each file decoded, its windows rendered, the eager NCHW model at batch 64,
  one after the other), `core.predict` with --backend torch, and with --backend onnx (their default batch
  size; the one-off trace of the first call is timed apart, once per run).
Target (issue 12): 24,000 windows (200 soundscapes x 10 min) in under 8 minutes on 2 CPU cores.
Not collected by pytest.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import birdsong  # noqa: E402
from core import audio, bundle, checkpoint  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from core.model import build_model  # noqa: E402
from core.predict import DEFAULT_BATCH, Predictor, predict  # noqa: E402

CLASSES = 264
TEST_SET = 24_000


def make_soundscapes(root: Path, n: int, minutes: float, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    names = [k for k in birdsong.tuxpaint_calls() if k != birdsong.SILENT]
    paths = []
    for i in range(n):
        parts, total = [], 0
        while total < minutes * 60 * 32000:
            c = birdsong.clip(names[int(rng.integers(len(names)))]) * rng.uniform(0.1, 1.0)
            parts += [c, np.zeros(int(rng.uniform(0.5, 6.0) * 32000), np.float32)]
            total += len(c) + len(parts[-1])
        path = root / f"soundscape_{i}.ogg"
        birdsong.write(path, np.concatenate(parts)[: int(minutes * 60 * 32000)].astype(np.float32), 32000)
        paths.append(path)
    return paths


def make_model_folder(folder: Path, model_name: str) -> bundle.Bundle:
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model(model_name, CLASSES)
    TrainConfig(model_name=model_name, pretrained=False, img_size=128).save(folder / "config.yaml")
    checkpoint.save(folder / "model.pt", {"model": model.state_dict(), "num_classes": CLASSES})
    bundle.write_extras(folder, [f"sp{i:03d}" for i in range(CLASSES)], audio.Spectrogram().to_dict())
    return bundle.load(folder)


def model_alone(b: bundle.Bundle, batch: int, repeats: int = 3) -> dict[str, float]:
    x = torch.randint(0, 256, (batch, 1, 128, 313), dtype=torch.uint8)
    repeats = max(repeats, 192 // batch)
    eager = build_model(b.config.model_name, CLASSES).eval()
    eager.load_state_dict(b.weights)
    last = build_model(b.config.model_name, CLASSES).eval().to(memory_format=torch.channels_last)
    last.load_state_dict(b.weights)
    frozen = Predictor(b, "cpu", "torch")
    rows = {"eager NCHW": lambda: eager(x), "eager channels_last": lambda: last(x),
            "traced + frozen (predict)": lambda: frozen(x[:, 0].numpy())}
    try:
        onnx = Predictor(b, "cpu", "onnx")
        rows["ONNX Runtime"] = lambda: onnx(x[:, 0].numpy())
    except Exception as e:  # onnxruntime not installed
        print(f"(no ONNX Runtime row: {e})")
    out = {}
    with torch.inference_mode():
        for name, f in rows.items():
            f()
            t0 = time.perf_counter()
            for _ in range(repeats):
                f()
            out[name] = repeats * batch / (time.perf_counter() - t0)
    return out


def plain_loop(paths: list[Path], b: bundle.Bundle, batch: int) -> int:
    model = build_model(b.config.model_name, CLASSES).eval()
    model.load_state_dict(b.weights)
    n = 0
    with torch.inference_mode():
        for p in paths:
            samples = audio.decode(p, b.spectrogram.sample_rate, strict=False)
            imgs = audio.images(audio.windows(samples, b.spectrogram.window_samples)[0], b.spectrogram)
            for i in range(0, len(imgs), batch):
                model(torch.from_numpy(imgs[i:i + batch, None])).softmax(-1)
            n += len(imgs)
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_b0")
    p.add_argument("--soundscapes", type=int, default=2)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64, help="of the plain loop and the first model-alone table")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the end-to-end rows")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --device cpu, or on a GPU machine", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="birdtune-bench-predict-"))
    try:
        paths = make_soundscapes(root / "soundscapes", args.soundscapes, args.minutes)
        b = make_model_folder(root / "best", args.model)
        where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"{args.model}, {CLASSES} classes, 128 x 313; {len(paths)} soundscape(s) x {args.minutes:g} min; {where}")
        if args.device == "cpu":
            for batch in dict.fromkeys((args.batch, DEFAULT_BATCH["cpu"])):
                print(f"model alone, batch {batch}:")
                for name, rate in model_alone(b, batch).items():
                    print(f"  {name:<28}{rate:>8.1f} windows/s")
        rows: dict[str, list[float]] = {}
        predictors = {"core.predict --backend torch": Predictor(b, args.device, "torch")}
        if args.device == "cpu":
            try:
                predictors["core.predict --backend onnx"] = Predictor(b, "cpu", "onnx")
            except Exception as e:
                print(f"(no ONNX row: {e})")
        for name, pred in predictors.items():  # one-off costs, once per run of predict: not in the rates
            t0 = time.perf_counter()
            pred(np.zeros((pred.batch_size, 128, 313), np.uint8))
            print(f"{name}: first call {time.perf_counter() - t0:.1f} s, once per run (torch on the CPU traces and "
                  "freezes the model then)")
        for r in range(args.repeats):
            if args.device == "cpu":
                t0 = time.perf_counter()
                n = plain_loop(paths, b, args.batch)
                rows.setdefault(f"plain loop (eager NCHW, batch {args.batch})", []).append(n / (time.perf_counter() - t0))
            for name, pred in predictors.items():
                t0 = time.perf_counter()
                ids, probs, errors = predict(paths, pred)
                rows.setdefault(name, []).append(len(ids) / (time.perf_counter() - t0))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()) + " windows/s",
                  flush=True)
        base = float(np.median(next(iter(rows.values()))))
        print(f"end to end (decode + spectrogram + model), median of {args.repeats} round(s):")
        print(f"  {'path':<32}{'windows/s':>10}{'x first':>9}{'24,000 windows':>16}")
        for name, v in rows.items():
            rate = float(np.median(v))
            minutes = TEST_SET / rate / 60
            print(f"  {name:<32}{rate:>10.1f}{rate / base:>8.2f}x{minutes:>12.1f} min"
                  + ("  (target < 8 min: met)" if minutes < 8 else "  (target < 8 min: missed)"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
