"""Paths that may be URIs (s3://bucket/x, gs://..., with pyarrow's ?endpoint_override=...&scheme=http query):
split, joined and read the way Ray reaches them, through pyarrow. Local paths pass through unchanged."""
from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def split(uri: str) -> tuple[str, str]:
    """('s3://bucket/path', '?endpoint_override=...') : the location and its query (kept for every
    path below it, as pyarrow reads connection options from it)."""
    base, q, query = str(uri).partition("?")
    return base.rstrip("/"), (q + query) if q else ""


def join(base: str, *parts: str) -> str:
    """base/part/...: for a URI the parts go before its query string."""
    if not is_uri(base):
        return os.path.join(base, *parts)
    where, query = split(base)
    return "/".join([where, *(p.strip("/") for p in parts)]) + query


def display(uri: str) -> str:
    """A URI without its query, for messages."""
    return split(uri)[0] if is_uri(uri) else str(uri)


def endpoint(uri: str) -> tuple[str, int] | None:
    """The (host, port) an s3:// URI talks to when it is not AWS itself: its endpoint_override, or
    AWS_ENDPOINT_URL(_S3); None for AWS or another scheme."""
    parts = urlsplit(str(uri))
    if parts.scheme != "s3":
        return None
    query = dict(kv.partition("=")[::2] for kv in parts.query.split("&") if kv)
    target = query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not target:
        return None
    if "://" not in target:
        target = f"{query.get('scheme', 'https')}://{target}"
    e = urlsplit(target)
    return e.hostname or "", e.port or (443 if e.scheme == "https" else 80)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and the path inside it."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(str(path))
    return pafs.LocalFileSystem(), str(path)


def read_bytes(path: str | os.PathLike) -> bytes | None:
    """A file's bytes, or None when it does not exist (a local path or a URI)."""
    if not is_uri(path):
        p = Path(path)
        return p.read_bytes() if p.is_file() else None
    fs, p = filesystem(str(path))
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return f.readall()


def open_bytes(path: str | os.PathLike) -> io.BytesIO | None:
    data = read_bytes(path)
    return None if data is None else io.BytesIO(data)
