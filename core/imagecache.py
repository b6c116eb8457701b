"""Decoded images kept as one uncompressed array file (.npy) per data set and image size, mapped
read-only by every process of a node: the OS page cache then holds one copy that the driver and all
trials share, and that outlives the search, so the next search on the same CSV decodes nothing.

A cache is keyed by the CSV's bytes, every image file's path, size and modification time, the image
size and the decoder's version; any change builds a new one (and removes the one it replaces). It is
written to a temporary name and renamed when whole, and its checksum (CRC-32 of every byte) is checked
before a search uses it: a truncated or corrupt file is rebuilt, never trusted.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

CACHE_VERSION = 1  # bump when decoding changes: it is part of every key
FOLDER = ".birdtune-cache"  # beside the CSV; cache_root()/images where that folder cannot be written
CHUNK = 512  # images decoded, written and checksummed per step (about 20 MB at 128 x 313)
READ_BLOCK = 64 << 20  # bytes per read when checking or copying a cache
SPARE_BYTES = 256 << 20  # free space a folder must keep beyond the cache to be chosen


def cache_root() -> Path:
    """Where birdtune keeps what it makes once (demo data, image caches of read-only data folders)."""
    return Path(os.environ.get("BIRDTUNE_CACHE", Path.home() / ".cache" / "birdtune"))


@dataclass(frozen=True)
class CacheRef:
    """A whole cache file as one process found it: small, pickled to every trial, which maps the same
    file when its identity (inode, size, mtime) is unchanged and checks it in full otherwise."""

    path: str
    key: str
    shape: tuple[int, int, int]
    offset: int  # bytes of .npy header before the images
    crc: int  # CRC-32 of the image bytes
    host: str  # the machine that checked it
    ident: tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns) of the file when checked

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


class CacheError(OSError):
    """No folder could hold a cache (the message says why for each)."""


def cache_key(csv: str | Path, paths: list[str], img_size: int) -> str:
    """What the decoded images depend on: the CSV's bytes, each image's path, size and mtime, the size."""
    h = hashlib.sha256(f"birdtune-images v{CACHE_VERSION} img_size={img_size}\n".encode())
    h.update(Path(csv).read_bytes())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def folders(csv: str | Path, where: str = "auto") -> list[Path]:
    """Candidate folders in order: beside the data, then the user's cache folder; or the one given."""
    if where not in ("", "auto"):
        return [Path(where).expanduser()]
    beside = Path(csv).resolve().parent  # absent on a node that lacks the data: not made there
    return [beside / FOLDER] * beside.is_dir() + [cache_root() / "images"]


def _names(folder: Path, key: str) -> tuple[Path, Path]:
    stem = folder / f"images-{key[:24]}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def _ident(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_header(path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, data offset) of a C-ordered uint8 .npy file; ValueError for anything else."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if fortran or dtype != np.uint8 or len(shape) != 3:
        raise ValueError(f"{path}: not a C-ordered uint8 (N, H, W) array")
    return tuple(int(s) for s in shape), offset


def file_crc(path: str | Path, offset: int) -> int:
    """CRC-32 of a file's bytes from offset on, read in blocks (never mapped: costs no process memory)."""
    crc, buf = 0, bytearray(READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        while n := fh.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return crc


def check(folder: Path, key: str) -> CacheRef | None:
    """The cache for key in folder if it is whole: its record names the key, its header the shape,
    its size matches, and every byte matches the recorded checksum. None otherwise (never trusted)."""
    npy, meta = _names(folder, key)
    try:
        info = json.loads(meta.read_text())
        if info.get("key") != key:
            return None
        shape, offset = _read_header(npy)
        ident = _ident(npy)
        if list(shape) != info["shape"] or ident[1] != offset + int(np.prod(shape)):
            return None
        if file_crc(npy, offset) != info["crc"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return CacheRef(str(npy), key, shape, offset, int(info["crc"]), socket.gethostname(), ident)


def still_whole(ref: CacheRef) -> bool:
    """The same file another process of this machine checked, unchanged since (no need to read it again)."""
    try:
        return ref.host == socket.gethostname() and _ident(Path(ref.path)) == ref.ident
    except OSError:
        return False


def open_images(ref: CacheRef) -> np.memmap:
    """The cache mapped read-only: pages come from (and stay in) the OS page cache, shared by every process."""
    return np.memmap(ref.path, dtype=np.uint8, mode="r", offset=ref.offset, shape=ref.shape)


def find(csv: str | Path, key: str, where: str = "auto") -> CacheRef | None:
    for folder in folders(csv, where):
        ref = check(folder, key)
        if ref is not None:
            return ref
    return None


# ---------------------------------------------------------------------------------------------
@contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One writer in a cache folder at a time, across processes (a search and its trials, two searches):
    the folder itself is locked, so no lock file is left behind."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def _made_for(folder: Path) -> Iterator[None]:
    """Remove the folder again if this writer made it and kept nothing there (no room, bad images)."""
    made = not folder.exists()
    try:
        yield
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _usable(folder: Path, nbytes: int) -> str:
    """'' if a cache of nbytes can be written in folder, else why not (one phrase)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"{folder} cannot be written ({e.strerror or e})"
    free = shutil.disk_usage(folder).free
    if free < nbytes + SPARE_BYTES:
        return f"{folder} has {free / 1e9:.1f} GB free, the cache needs {(nbytes + SPARE_BYTES) / 1e9:.1f} GB"
    return ""


def _remove_stale(folder: Path) -> None:
    """Temporary files left by writers of this machine that were killed mid-write."""
    host = socket.gethostname()
    for tmp in folder.glob(f"images-*.npy.{host}.*.tmp"):
        pid = int(tmp.name.split(".")[-2]) if tmp.name.split(".")[-2].isdigit() else 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass


def _remove_replaced(folder: Path, key: str, source: str, img_size: int) -> list[str]:
    """Caches of the same CSV at the same image size under another key: out of date, and each as large."""
    gone = []
    for meta in folder.glob("images-*.json"):
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if info.get("key") != key and info.get("csv") == source and info.get("img_size") == img_size:
            meta.unlink(missing_ok=True)
            meta.with_suffix(".npy").unlink(missing_ok=True)
            gone.append(meta.with_suffix(".npy").name)
    return gone


def publish(folder: Path, key: str, shape: tuple[int, int, int], write: Callable[[BinaryIO], int],
            record: dict) -> CacheRef:
    """Write a cache atomically: `write(fh)` writes the .npy file and returns the images' CRC-32; the file
    is synced and renamed, then its record written. A reader sees a whole cache or none."""
    npy, meta = _names(folder, key)
    tmp = npy.with_name(f"{npy.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            crc = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        shape_read, offset = _read_header(tmp)
        if shape_read != tuple(shape) or os.path.getsize(tmp) != offset + int(np.prod(shape)):
            raise ValueError(f"{tmp}: wrote {os.path.getsize(tmp)} bytes for shape {shape}")
        meta.unlink(missing_ok=True)  # an old record must not vouch for the new file for a moment
        os.replace(tmp, npy)
        rec_tmp = meta.with_name(meta.name + ".tmp")
        rec_tmp.write_text(json.dumps({**record, "key": key, "shape": list(shape), "crc": crc,
                                       "version": CACHE_VERSION, "created": time.time()}))
        os.replace(rec_tmp, meta)
    finally:
        tmp.unlink(missing_ok=True)
    return CacheRef(str(npy), key, tuple(shape), offset, crc, socket.gethostname(), _ident(npy))


def build(csv: str | Path, paths: list[str], img_size: int, key: str, decode: Callable[[str], np.ndarray | None],
          hw: tuple[int, int], on_bad: Callable[[list[str], list[tuple[str, tuple]]], None],
          where: str = "auto", progress: bool = False, workers: int | None = None) -> tuple[CacheRef, list[str] | None]:
    """Decode every image into a new cache in the first usable folder (another process building the
    same one is waited for and its result used). `on_bad(undecodable, wrong_size)` raises the user's
    error after the pass. Returns the cache and the names of caches it replaced (None where another
    process had built it meanwhile). CacheError if no folder can hold it."""
    shape = (len(paths), *hw)
    reasons = []
    for folder in folders(csv, where):
        with _made_for(folder):
            why = _usable(folder, int(np.prod(shape)))
            if why:
                reasons.append(why)
                continue
            return _build_in(folder, csv, paths, img_size, key, shape, decode, on_bad, progress, workers)
    raise CacheError("; ".join(reasons))


def _build_in(folder: Path, csv, paths, img_size, key, shape, decode, on_bad, progress, workers
              ) -> tuple[CacheRef, list[str] | None]:
    with _lock(folder):
        ref = check(folder, key)  # built by another process while this one waited
        if ref is not None:
            return ref, None
        _remove_stale(folder)

        def write(fh: BinaryIO) -> int:
            return _decode_into(fh, paths, shape, decode, on_bad, progress, workers)

        source = str(Path(csv).resolve())
        ref = publish(folder, key, shape, write, {"csv": source, "img_size": img_size, "images": len(paths)})
        return ref, _remove_replaced(folder, key, source, img_size)


def _decode_into(fh: BinaryIO, paths: list[str], shape: tuple[int, int, int], decode, on_bad,
                 progress: bool, workers: int | None) -> int:
    np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
    crc, broken, wrong = 0, [], []
    blank = np.zeros(shape[1:], np.uint8)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc="decoding images", unit="img", leave=False, disable=None)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:  # cv2 releases the GIL
        for start in range(0, len(paths), CHUNK):
            part = paths[start:start + CHUNK]
            imgs = list(pool.map(decode, part))
            for p, im in zip(part, imgs):
                if im is None:
                    broken.append(p)
                elif im.shape != shape[1:]:
                    wrong.append((p, im.shape))
            block = np.stack([im if im is not None and im.shape == shape[1:] else blank for im in imgs])
            fh.write(block.data)
            crc = zlib.crc32(block.data, crc)
            if bar is not None:
                bar.update(len(part))
    if bar is not None:
        bar.close()
    if broken or wrong:
        on_bad(broken, wrong)
    return crc


def copy_from(read: Callable[[int, int], bytes], ref: CacheRef, folder: Path, record: dict) -> CacheRef:
    """Copy a cache another machine holds (`read(offset, length)` returns its bytes) into folder,
    checked against its checksum before it is published."""
    with _made_for(folder):
        why = _usable(folder, ref.nbytes)
        if why:
            raise CacheError(why)
        return _copy_in(read, ref, folder, record)


def _copy_in(read: Callable[[int, int], bytes], ref: CacheRef, folder: Path, record: dict) -> CacheRef:
    total = ref.offset + ref.nbytes

    def write(fh: BinaryIO) -> int:
        crc, done = 0, 0
        while done < total:
            block = read(done, min(READ_BLOCK, total - done))
            if not block:
                raise OSError(f"{ref.path} on {ref.host} ended after {done} of {total} bytes")
            fh.write(block)
            data = memoryview(block)[max(0, ref.offset - done):]
            crc = zlib.crc32(data, crc)
            done += len(block)
        if crc != ref.crc:
            raise OSError(f"the copy of {ref.path} from {ref.host} does not match its checksum")
        return crc

    with _lock(folder):
        got = check(folder, ref.key)
        if got is not None:
            return got
        return publish(folder, ref.key, ref.shape, write, record)
