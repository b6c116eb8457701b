"""The notebook's CSV read and validated (its folds split), and its images decoded once (kept in the node's
image cache file, core.imagecache). What a training run reads of them: core.datasets."""
from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from core import imagecache
from core.errors import DataError  # (defined where nothing heavy is imported)

REQUIRED_COLUMNS = ("image_path", "label", "fold")  # label_name and group are optional
DATASET_FILE = "prepare.yaml"  # written by core.prepare beside train.csv: spectrogram settings and class names


def _first(items, n: int = 3) -> str:
    items = list(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def read_table(csv: str | Path, num_classes: int = 0) -> tuple[pd.DataFrame, int]:
    """Read and validate a notebook-format CSV.

    Returns the table with resolved absolute `path`, integer `label` and `fold`, and the class
    count (inferred as max(label) + 1 when `num_classes` is 0). Image paths may be relative to the
    CSV's folder or to the working directory and may use Windows backslashes.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"CSV not found: {csv}")
    try:
        df = pd.read_csv(csv)
    except Exception as e:  # pandas raises a zoo of parser errors
        raise DataError(f"cannot read CSV {csv}: {str(e).splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"CSV {csv} lacks column(s) {', '.join(missing)}; expected image_path,label,label_name,group,fold"
        )
    if df.empty:
        raise DataError(f"CSV {csv} has no rows")
    df = df.copy()
    df["label"] = _integer_column(df["label"], "label", csv)
    df["fold"] = _integer_column(df["fold"], "fold", csv)
    if "label_name" not in df.columns:
        df["label_name"] = df["label"].astype(str)
    if "group" not in df.columns:
        df["group"] = np.arange(len(df)).astype(str)

    if (df["label"] < 0).any():
        raise DataError(f"CSV {csv}: negative labels at rows {_first(df.index[df['label'] < 0])}")
    inferred = int(df["label"].max()) + 1
    if num_classes == 0:
        # a dataset made by core.prepare lists every species, also those after the last one with images
        num_classes = max(inferred, len(dataset_info(csv)[0] or []))
    bad = df.index[df["label"] >= num_classes]
    if len(bad):
        raise DataError(
            f"CSV {csv}: {len(bad)} label(s) outside 0..{num_classes - 1} (rows {_first(bad)}); "
            f"set num_classes >= {inferred} or 0 to infer"
        )
    if num_classes < 2:
        raise DataError(f"CSV {csv}: needs at least 2 classes, found {num_classes}")

    df["path"] = resolve_paths(df["image_path"], csv.parent)
    gone = df.loc[df["path"] == "", "image_path"]
    if len(gone):
        raise DataError(
            f"CSV {csv}: {len(gone)} image(s) not found relative to {csv.parent} or {Path.cwd()}: {_first(gone)}"
        )
    return df.reset_index(drop=True), num_classes


def dataset_info(csv: str | Path) -> tuple[list[str] | None, dict | None]:
    """(class names in label order, spectrogram settings) from the prepare.yaml beside a CSV made by
    core.prepare; (None, None) for any other CSV."""
    import yaml

    path = Path(csv).parent / DATASET_FILE
    if not path.is_file():
        return None, None
    try:
        info = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    classes = info.get("classes")
    return ([str(c) for c in classes] if isinstance(classes, list) else None), info.get("spectrogram")


def dataset_labels(table: pd.DataFrame, num_classes: int, csv: str | Path) -> tuple[list[str], dict | None]:
    """(class names in label order, spectrogram settings or None) of a training table, as a model folder
    records them: prepare.yaml's names, else each label's label_name (the label number if absent)."""
    names, spectrogram = dataset_info(csv)
    if not (names and len(names) == num_classes):
        by_label = dict(zip(table["label"], table["label_name"].astype(str)))
        names = [by_label.get(i, str(i)) for i in range(num_classes)]
    return names, spectrogram


def _integer_column(col: pd.Series, name: str, csv: Path) -> pd.Series:
    num = pd.to_numeric(col, errors="coerce")
    bad = col.index[num.isna() | (num % 1 != 0)]
    if len(bad):
        raise DataError(f"CSV {csv}: column '{name}' must hold integers; bad values {_first(col[bad])}")
    return num.astype(np.int64)


def resolve_paths(raw: pd.Series, csv_dir: Path) -> list[str]:
    """Absolute path for each entry ('' where the file exists in neither place), its folder's symlinks
    resolved (once per folder: a BirdCLEF CSV has 100,000s of rows in a few hundred folders)."""
    cwd, base = os.getcwd(), os.path.abspath(csv_dir)
    real: dict[str, str] = {}
    out = []
    for p in raw.astype(str):
        p = p.replace("\\", "/")
        candidates = (p,) if os.path.isabs(p) else (os.path.join(base, p), os.path.join(cwd, p))
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            out.append("")
            continue
        folder, name = os.path.split(os.path.normpath(found))
        if folder not in real:
            real[folder] = os.path.realpath(folder)
        out.append(os.path.join(real[folder], name))
    return out


def split_folds(df: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of every other fold train; rows of `fold` validate. Both must be non-empty."""
    train, val = df[df["fold"] != fold], df[df["fold"] == fold]
    folds = sorted(df["fold"].unique().tolist())
    if val.empty:
        raise DataError(f"fold {fold} has no rows to validate on; the CSV's folds are {folds}")
    if train.empty:
        raise DataError(f"no training rows outside fold {fold}; the CSV's folds are {folds}")
    return train.reset_index(drop=True), val.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
def resize_smallest(img: np.ndarray, img_size: int) -> np.ndarray:
    """SmallestMaxSize(img_size, INTER_AREA): the shorter side becomes img_size pixels (the notebook's resize)."""
    h, w = img.shape
    scale = img_size / min(h, w)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def decode_image(path: str, img_size: int) -> np.ndarray | None:
    """One grayscale uint8 image resized as SmallestMaxSize(img_size, INTER_AREA); None if undecodable."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        # spectrograms are grayscale saved as RGB: one channel carries everything
        if img.shape[2] == 1 or (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])):
            img = img[:, :, 0]
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return resize_smallest(img, img_size)


def decode_images(paths: list[str], img_size: int, workers: int | None = None, progress: bool = False) -> np.ndarray:
    """Decode every image once into one contiguous (N, H, W) uint8 array."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # cv2 releases the GIL while decoding
        it = pool.map(lambda p: decode_image(p, img_size), paths, chunksize=64)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(paths), desc="decoding images", leave=False, disable=None)  # terminals only
        imgs = list(it)
    broken = [p for p, im in zip(paths, imgs) if im is None]
    if broken:
        raise DataError(f"{len(broken)} image(s) could not be decoded: {_first(broken)}")
    shapes = {im.shape for im in imgs}
    if len(shapes) > 1:
        first = [p for p, im in zip(paths, imgs) if im.shape != imgs[0].shape]
        raise DataError(
            f"images differ in size after resizing to {img_size} px ({_first(sorted(shapes))}), e.g. {_first(first)}; "
            "cut spectrograms into chunks of one duration"
        )
    if not imgs:
        return np.zeros((0, img_size, img_size), np.uint8)
    return np.stack(imgs)


class LazyImages:
    """(N, H, W) uint8 images decoded from disk on every access, for data sets whose decoded size is
    above the memory limit: indexable like the array (an index or an integer array), never held."""

    def __init__(self, paths: list[str], img_size: int, hw: tuple[int, int]):
        self.paths, self.img_size = list(paths), img_size
        self.shape = (len(self.paths), *hw)
        self.dtype, self.ndim, self.nbytes = np.dtype(np.uint8), 3, 0  # nothing resident

    def __len__(self) -> int:
        return self.shape[0]

    def _one(self, i: int) -> np.ndarray:
        img = decode_image(self.paths[i], self.img_size)
        if img is None:
            raise DataError(f"image could not be decoded: {self.paths[i]}")
        if img.shape != self.shape[1:]:
            raise DataError(f"{self.paths[i]} is {img.shape} after resizing, the others {self.shape[1:]}; "
                            "cut spectrograms into chunks of one duration")
        return img

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._one(int(key))
        idx = np.asarray(key)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise TypeError("LazyImages takes an index or a 1-d integer array")
        if len(idx) == 0:
            return np.zeros((0, *self.shape[1:]), np.uint8)
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # cv2 releases the GIL
            return np.stack(list(pool.map(self._one, idx.tolist())))


@dataclass
class DecodedData:
    """A validated table and its images: mapped from the node's image cache file (the usual case), held in
    memory (no folder could hold a cache), or read lazily from the image files (neither). What a search
    shares with every trial: pickled, it carries the table and the cache's identity, never the images;
    each process maps the file of its own node (checked, built, or copied there if that node lacks it)."""

    table: pd.DataFrame  # path, label, fold, label_name, group; row i is images[i]
    images: np.ndarray | LazyImages | None  # (N, H, W) uint8; None: this node has no cache yet (see missing)
    num_classes: int
    img_size: int
    csv: str
    cache: imagecache.CacheRef | None = None  # the array file images map, if any
    how: str = "memory"  # 'reused' | 'built' (a cache file) | 'memory' | 'lazy' | 'copied' (from another node)
    where: str = "auto"  # TrainConfig.image_cache: where caches may go
    note: str = ""  # why no cache was used, or which caches a new one replaced
    seconds: float = 0.0  # spent getting the images ready (decoding, or checking a cache)
    missing: str = ""  # why images is None on this node

    @property
    def nbytes(self) -> int:
        """Bytes of decoded images this process holds privately (0 for a mapped cache or lazy reads)."""
        return 0 if self.cache is not None or self.images is None else int(self.images.nbytes)

    @property
    def data_bytes(self) -> int:
        """Bytes the decoded images take (N x H x W), wherever they live."""
        return int(np.prod(self.shape))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.cache.shape) if self.cache is not None else tuple(self.images.shape)

    @property
    def lazy(self) -> bool:
        return isinstance(self.images, LazyImages)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.cache is not None:
            state["images"] = None  # each process maps its node's file: the images never travel
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.cache is not None:
            self.attach()

    def attach(self) -> None:
        """Map this node's copy of the cache: the same file if unchanged, else one found by key in this
        node's folders, else one built here from the image files; if the images are not here either,
        `images` stays None and `missing` says so (a search copies the file from the driver's node)."""
        ref = self.cache
        try:
            if imagecache.still_whole(ref):
                self.images = imagecache.open_images(ref)
                return
            found = imagecache.find(self.csv, ref.key, self.where)
            if found is None:
                paths = self.table["path"].tolist()
                absent = [p for p in paths if not os.path.isfile(p)]
                if absent:
                    self.images, self.missing = None, (
                        f"{socket.gethostname()} has no image cache {Path(ref.path).name} and lacks "
                        f"{len(absent)} of the images ({_first(absent, 1)})")
                    return
                found, _ = imagecache.build(self.csv, paths, self.img_size, ref.key,
                                            lambda p: decode_image(p, self.img_size), ref.shape[1:],
                                            _refuse_bad(self.img_size, ref.shape[1:]), self.where)
            self.cache, self.images = found, imagecache.open_images(found)
        except (OSError, DataError) as e:
            self.images, self.missing = None, f"{socket.gethostname()}: image cache unusable: {e}"


def _refuse_bad(img_size: int, hw: tuple[int, int]) -> Callable[[list[str], list], None]:
    def refuse(broken: list[str], wrong: list[tuple[str, tuple]]) -> None:
        if broken:
            raise DataError(f"{len(broken)} image(s) could not be decoded: {_first(broken)}")
        shapes = sorted({hw, *(s for _, s in wrong)})
        raise DataError(
            f"images differ in size after resizing to {img_size} px ({_first(shapes)}), e.g. "
            f"{_first(p for p, _ in wrong)}; cut spectrograms into chunks of one duration")
    return refuse


def load_data(csv: str | Path, img_size: int, num_classes: int = 0, progress: bool = False,
              memory_limit_gb: float = 0.0, image_cache: str = "auto", fold: int | None = None) -> DecodedData:
    """The CSV's table and its images decoded once into the node's image cache file (core.imagecache),
    or found there whole from an earlier run. Where no folder can hold a cache (or image_cache='off'),
    images are decoded into memory, or, above memory_limit_gb (> 0), read from disk on access. With
    `fold`, a fold that cannot validate is refused before anything is decoded."""
    t0 = time.perf_counter()
    table, num_classes = read_table(csv, num_classes)
    if fold is not None:
        split_folds(table, fold)
    paths = table["path"].tolist()
    table = table[["path", "image_path", "label", "fold", "label_name", "group"]]
    source = str(Path(csv).resolve())

    def done(images, **kw) -> DecodedData:
        return DecodedData(table, images, num_classes, img_size, source, where=image_cache,
                           seconds=time.perf_counter() - t0, **kw)

    first = decode_image(paths[0], img_size)
    if first is None:
        raise DataError(f"1 image(s) could not be decoded: {paths[0]}")
    note = ""
    if image_cache != "off":
        key = imagecache.cache_key(csv, paths, img_size)
        ref = imagecache.find(csv, key, image_cache)
        if ref is not None:
            return done(imagecache.open_images(ref), cache=ref, how="reused")
        try:
            ref, replaced = imagecache.build(csv, paths, img_size, key, lambda p: decode_image(p, img_size),
                                             first.shape, _refuse_bad(img_size, first.shape), image_cache, progress)
            if replaced is None:  # another process built it while this one waited
                return done(imagecache.open_images(ref), cache=ref, how="reused")
            note = f"replaced {len(replaced)} older cache(s) of this CSV" if replaced else ""
            return done(imagecache.open_images(ref), cache=ref, how="built", note=note)
        except OSError as e:  # imagecache.CacheError (no folder had room), or the disk filled up while writing
            note = f"no folder could hold an image cache: {e}"
    else:
        note = "image_cache=off"
    if memory_limit_gb > 0 and len(paths) * first.size > memory_limit_gb * 1e9:
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{len(missing)} image(s) could not be decoded: {_first(missing)}")
        return done(LazyImages(paths, img_size, first.shape), how="lazy", note=note)
    return done(decode_images(paths, img_size, progress=progress), how="memory", note=note)


