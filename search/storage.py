"""Reading and writing small files under a local path or any pyarrow URI (s3://, gs://, file://, ...)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


def normalize(path: str) -> str:
    """Absolute local path (Ray requires it), or the URI as given; file:// URIs become local paths."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if is_uri(path):
        return path.rstrip("/")
    return str(Path(path).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else os.path.join(base, *parts)


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_text(path: str) -> str | None:
    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.readall().decode()


def write_bytes(path: str, data: bytes) -> None:
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def check_writable(path: str) -> str | None:
    """None if a file can be created and removed under `path`, else the reason."""
    probe = join(path, f".birdtune-write-test-{uuid.uuid4().hex[:8]}")
    try:
        fs, p = _fs(probe)
        write_bytes(probe, b"ok")
        fs.delete_file(p)
    except Exception as e:  # permission, missing bucket, bad credentials, read-only mount, ...
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
