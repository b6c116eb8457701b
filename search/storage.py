"""Reading and writing small files under a local path or any pyarrow URI (s3://, gs://, file://, ...), and
checking in seconds that a storage path can be used."""
from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from core import files
from core.files import display, is_uri, join

__all__ = ["is_uri", "join", "display", "normalize", "exists", "read_text", "read_bytes", "write_bytes",
           "write_text", "replace_bytes", "listdir", "delete", "check_writable", "basename", "shell"]
# how long the write test may take before the storage counts as not answering (BIRDTUNE_PROBE_TIMEOUT_S)
PROBE_TIMEOUT_S = float(os.environ.get("BIRDTUNE_PROBE_TIMEOUT_S", 20))


def normalize(path: str) -> str:
    """Absolute local path (Ray requires it), or the URI as given (query kept); file:// URIs become local."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    if is_uri(path):
        where, query = files.split(path)
        return where + query
    return str(Path(path).expanduser().resolve())


def exists(path: str) -> bool:
    fs, p = files.filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def read_bytes(path: str) -> bytes | None:
    return files.read_bytes(path)


def read_text(path: str) -> str | None:
    data = files.read_bytes(path)
    return None if data is None else data.decode()


def write_bytes(path: str, data: bytes) -> None:
    fs, p = files.filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def replace_bytes(path: str, data: bytes) -> None:
    """Write a file so that a reader (or a process killed meanwhile) sees the old bytes or the new, never a part:
    a local file under a temporary name, then renamed; an object store replaces whole objects anyway."""
    if is_uri(path):
        write_bytes(path, data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def listdir(path: str) -> list[str]:
    """The names in a folder (local or URI); [] when it does not exist."""
    fs, p = files.filesystem(path)
    return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)))


def delete(path: str) -> None:
    """Remove a file or a folder (with what it holds); nothing when it does not exist."""
    fs, p = files.filesystem(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif kind != pafs.FileType.NotFound:
        fs.delete_file(p)


CREDENTIAL_ERRORS = ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN")


def _reason(e: BaseException) -> str:
    """One line of what went wrong: pyarrow's S3 errors read 'When ...: AWS Error CODE during OP
    operation: message (Request ID: ...)', where the message may be empty."""
    import re

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "curlCode: 28" in text:  # the request's own timeout (PROBE_TIMEOUT_S / 2) came first
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    m = re.search(r"AWS Error (\w+) during \w+ operation: (.*?)(?: \(Request ID: [^)]*\))?$", text)
    if not m:
        return text
    code, message = m.groups()
    if code in CREDENTIAL_ERRORS:
        return (f"the credentials are refused ({code}{': ' + message if 'response body' not in message else ''}); "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    message = message.split(". To create buckets")[0]  # pyarrow's hint: birdtune does not create buckets
    return message if message and "response body" not in message else f"AWS Error {code}"


def check_writable(path: str) -> str | None:
    """None if a file can be created and removed under `path`, else why not, within seconds: an S3
    endpoint that does not take connections, a missing bucket, refused credentials, a read-only folder."""
    target = files.endpoint(path)
    if target:
        try:
            socket.create_connection(target, timeout=3).close()
        except OSError as e:
            return f"the S3 endpoint {target[0]}:{target[1]} does not answer ({e.strerror or e})"
    probe = join(path, f".birdtune-write-test-{uuid.uuid4().hex[:8]}")
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            fs, p = _probe_filesystem(probe)
            fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(p) as f:
                f.write(b"ok")
            fs.delete_file(p)
            outcome.append(None)
        except Exception as e:  # permission, missing bucket, bad credentials, read-only mount, ...
            outcome.append(_reason(e))

    worker = threading.Thread(target=attempt, daemon=True)  # pyarrow retries for minutes on its own
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    if not outcome:
        return f"no answer within {PROBE_TIMEOUT_S:g} s"
    return outcome[0]


def _probe_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for the write test: for s3:// with short timeouts and one attempt (pyarrow's own
    retries would keep a request to a silent endpoint open, and the process from exiting, for minutes)."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(path)
    query = dict(parse_qsl(parts.query))
    if parts.scheme != "s3" or set(query) - {"endpoint_override", "scheme", "region"}:
        return files.filesystem(path)
    import os

    endpoint, scheme = query.get("endpoint_override"), query.get("scheme")
    env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint and env:  # what pyarrow's from_uri would take from the environment
        e = urlsplit(env if "://" in env else f"https://{env}")
        endpoint, scheme = e.netloc, e.scheme
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme=scheme,
                           region=query.get("region") or os.environ.get("AWS_DEFAULT_REGION"),
                           connect_timeout=5, request_timeout=PROBE_TIMEOUT_S / 2,
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    return fs, parts.netloc + parts.path


def basename(path: str) -> str:
    return display(path).rstrip("/").rsplit("/", 1)[-1]


def shell(text: str) -> str:
    """A path quoted for a shell command line when it needs it (a URI's '?' and '&' do)."""
    import shlex

    return shlex.quote(text)
