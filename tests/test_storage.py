"""search.storage on local paths and on an S3 endpoint that does not answer (test_s3 runs it against a moto
server): paths, whole-file writes, listing and removal, and the write probe's one-line reasons."""
import time

from helpers import free_port
from search import storage


def test_paths_are_made_absolute_and_uris_kept_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.normalize("results") == str(tmp_path / "results")
    assert storage.normalize(f"file://{tmp_path}/r") == str(tmp_path / "r")
    uri = "s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.normalize(uri) == uri
    assert storage.join(uri, "e") == "s3://bucket/runs/e?endpoint_override=127.0.0.1:9000&scheme=http"
    assert storage.basename(storage.join(uri, "e")) == "e"
    assert storage.shell(storage.join(uri, "e")).startswith("'s3://") and storage.shell("plain/path") == "plain/path"


def test_files_are_written_read_listed_replaced_and_removed(tmp_path):
    folder = str(tmp_path / "exp")
    assert storage.read_text(storage.join(folder, "a.txt")) is None and storage.listdir(folder) == []
    storage.write_text(storage.join(folder, "sub", "a.txt"), "one")
    storage.replace_bytes(storage.join(folder, "b.bin"), b"\x00\x01")
    storage.replace_bytes(storage.join(folder, "b.bin"), b"\x02")
    assert storage.listdir(folder) == ["b.bin", "sub"]  # no temporary name left behind
    assert storage.read_text(storage.join(folder, "sub", "a.txt")) == "one" and storage.read_bytes(storage.join(folder, "b.bin")) == b"\x02"
    storage.delete(storage.join(folder, "sub"))
    storage.delete(storage.join(folder, "never-there"))
    assert storage.listdir(folder) == ["b.bin"] and storage.exists(folder) and not storage.exists(folder + "-not")


def test_a_path_that_cannot_be_written_is_named_in_one_line(tmp_path):
    assert storage.check_writable(str(tmp_path / "new" / "folder")) is None
    (tmp_path / "a-file").write_text("x")
    problem = storage.check_writable(str(tmp_path / "a-file" / "below"))
    assert problem and "\n" not in problem
    assert list((tmp_path / "new" / "folder").iterdir()) == []  # the probe's file removed again


def test_an_s3_endpoint_that_does_not_answer_is_named_within_seconds():
    port = free_port()
    t0 = time.monotonic()
    problem = storage.check_writable(f"s3://bucket/x?endpoint_override=127.0.0.1:{port}&scheme=http")
    assert problem == f"the S3 endpoint 127.0.0.1:{port} does not answer (Connection refused)"
    assert time.monotonic() - t0 < 5


def test_s3_errors_read_as_their_reason():
    def reason(text):
        return storage._reason(OSError(text))

    denied = ("When uploading: AWS Error ACCESS_DENIED during PutObject operation: Access Denied "
              "(Request ID: 1234)")
    assert reason(denied) == ("the credentials are refused (ACCESS_DENIED: Access Denied); check AWS_ACCESS_KEY_ID "
                              "and AWS_SECRET_ACCESS_KEY")
    missing = ("When creating: AWS Error NETWORK_CONNECTION during CreateBucket operation: Bucket 'b' does not exist. "
               "To create buckets, enable ...")
    assert reason(missing) == "Bucket 'b' does not exist"
    assert reason("curlCode: 28, Timeout was reached") == f"no answer within {storage.PROBE_TIMEOUT_S:g} s"
