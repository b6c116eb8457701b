"""`python -m core.predict --export-kaggle DIR --model M [--model M2 ...]`: one folder to upload as a Kaggle
dataset, for a submission notebook with the internet off: birdtune's wheel (installed there with
`pip install --no-deps`: core.predict needs only torch, timm, numpy, pandas, pyarrow, OpenCV, Pillow,
PyYAML, tqdm, safetensors, soundfile/soxr and scipy, which Kaggle's image has), the model folder(s), and a
README with the two notebook cells.

The wheel is written from the installed birdtune's own files (no build tools, no network), so an
editable install and a wheel install export the same thing.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from pathlib import Path

import core
from core.errors import UserError

PACKAGES = ("core", "search", "spaces")  # what the wheel holds (core.predict imports only core)
# what core.predict imports at run time, by distribution name: the Kaggle image has all of them
RUNTIME = ("torch", "timm", "numpy", "pandas", "pyarrow", "opencv-python-headless", "pillow", "pyyaml", "tqdm",
           "safetensors", "soundfile", "soxr", "scipy")  # scipy: the mel filterbank (core.audio)
DATASET = "birdtune-model"  # the Kaggle dataset name the README's cells assume
COMPETITION = "birdclef-2025"


class KaggleError(UserError):
    """The export cannot be written; one line."""


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: str | Path) -> Path:
    """birdtune-<version>-py3-none-any.whl from the installed packages' Python files (PEP 427 layout)."""
    try:
        meta = importlib.metadata.distribution("birdtune")
        version, requires = meta.version, meta.requires or []
    except importlib.metadata.PackageNotFoundError:
        version, requires = "0.0.0", []
    root = Path(core.__file__).resolve().parent.parent
    files: dict[str, bytes] = {}
    for pkg in PACKAGES:
        folder = root / pkg
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    if "core/predict.py" not in files:
        raise KaggleError(f"birdtune's source files are not under {root}; reinstall it (pip install -e .)")
    info = f"birdtune-{version}.dist-info"
    files[f"{info}/METADATA"] = "".join(
        ["Metadata-Version: 2.1\n", "Name: birdtune\n", f"Version: {version}\n",
         "Summary: birdtune (core.predict for offline submissions)\n", "Requires-Python: >=3.11\n",
         *(f"Requires-Dist: {r}\n" for r in requires)]).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: birdtune.core.kaggle\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/top_level.txt"] = "".join(f"{p}\n" for p in PACKAGES).encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    out = Path(out_dir) / f"birdtune-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)  # reproducible
    return out


def readme(wheel: str, models: list[str], dataset: str = DATASET, competition: str = COMPETITION) -> str:
    base = f"/kaggle/input/{dataset}"
    model_args = " ".join(f"--model {base}/{m}" for m in models)
    return f"""# birdtune model for an offline Kaggle submission

Upload this folder as a Kaggle dataset named `{dataset}` (or change the paths below), add it and the
competition's data to your notebook, turn the internet off, and run two cells:

```
!pip install --no-deps --no-index {base}/{wheel}
```

```
!python -m core.predict {model_args} --audio /kaggle/input/{competition}/test_soundscapes --out /kaggle/working/submission.csv --device cpu --quiet
```

`--no-deps` keeps pip from looking for birdtune's search dependencies (Ray, Optuna, albumentations), which
predicting does not use; what it does use (torch, timm, numpy, pandas, pyarrow, OpenCV, Pillow, PyYAML, tqdm,
safetensors, soundfile, soxr, scipy) is in Kaggle's image. The submission has one row per 5-second window
(`<soundscape>_<end second>`) and one column per class in the order of `{models[0]}/classes.txt`.
{"With several model folders the probabilities are averaged (an ensemble)." if len(models) > 1 else ""}
"""


def export(models: list[str | Path], out_dir: str | Path, dataset: str = DATASET,
           competition: str = COMPETITION) -> list[Path]:
    """Write the wheel, the model folder(s) (model/, or model-1/, model-2/, ... for an ensemble) and README.md
    into out_dir; returns what it wrote."""
    from core import bundle

    for m in models:
        bundle.load(m)  # every model folder whole before anything is written
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise KaggleError(f"--export-kaggle {out} is not empty; give a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KaggleError(f"--export-kaggle {out} cannot be made: {e.strerror or e}") from None
    names = ["model"] if len(models) == 1 else [f"model-{i}" for i in range(1, len(models) + 1)]
    written = [build_wheel(out)]
    for name, m in zip(names, models):
        target = out / name
        target.mkdir()
        for f in (bundle.CONFIG, bundle.CLASSES, bundle.SPECTROGRAM):
            shutil.copy2(Path(m) / f, target / f)
        weights = next(Path(m) / n for n in (bundle.MODEL, "best.pt") if (Path(m) / n).is_file())
        shutil.copy2(weights, target / bundle.MODEL)
        written.append(target)
    (out / "README.md").write_text(readme(written[0].name, names, dataset, competition))
    written.append(out / "README.md")
    return written


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else os.path.getsize(path)
