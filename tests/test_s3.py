"""Results in S3, against a real S3-compatible server on loopback (moto's server mode, authentication on),
reached the way Ray reaches it, through pyarrow: with AWS_ENDPOINT_URL and with pyarrow's own
?endpoint_override=...&scheme=http URI form."""
import io
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading

import optuna
import pandas as pd
import pytest

import helpers
import s3server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3():
    server = s3server.start()
    yield server
    server.stop()


def run_printed(command: str, env, cwd):
    """Run a command as the search printed it, through a shell, as a user pastes it."""
    return subprocess.run(["bash", "-c", command.replace("python ", f"{shlex.quote(sys.executable)} ", 1)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def trial_epochs(s3, prefix: str) -> dict[str, list[int]]:
    """Each trial's reported epochs, in order, from the result.json Ray wrote into the bucket."""
    out = {}
    for key in s3.keys(prefix):
        if key.endswith("/result.json"):
            rows = pd.read_json(io.BytesIO(s3.read(key)), lines=True)
            out[key.split("/")[-2]] = rows["epoch"].tolist()
    return out


@pytest.fixture(scope="module")
def killed(s3, tmp_path_factory):
    """A search killed (SIGKILL) mid-search, then resumed from another folder, its local Optuna file gone as
    on another machine (AWS_ENDPOINT_URL names the server); returns the two folders and the resume."""
    env = s3.env()
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    store = s3.uri("kill")
    proc = helpers.search("--storage-path", store, "--name", "k", "--num-samples", "8", "--concurrency", "1",
                          env=env, cwd=first, popen=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    assert helpers.wait_for(lambda: sum("/8 trial" in ln for ln in lines) >= 3, 240, every=0.2), "".join(lines)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    study = first / "results" / "k" / "optuna.db"
    assert study.is_file()  # SQLite needs a local file: it lives where the search started
    study.unlink()  # as if resumed on another machine
    try:
        r = helpers.search("--storage-path", store, "--name", "k", "--resume", env=env, cwd=second, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"--resume did not finish: {(e.stdout or b'')[-3000:]!r} {(e.stderr or b'')[-3000:]!r}")
    return first, second, r


def searched(s3, form: str, killed, tmp_path_factory):
    """(prefix, env, query, the search's output): with AWS_ENDPOINT_URL the killed and resumed search above,
    with pyarrow's ?endpoint_override= form a search of its own, which starts from the model that search
    exported (the URI in that form, read from the bucket by every trial)."""
    query = form == "endpoint_override"
    env = s3.env(endpoint_env=not query)
    if not query:
        return "kill/k", env, query, killed[2]
    r = helpers.search("--storage-path", s3.uri(f"runs-{form}", query=True), "--name", "e", "--num-samples", "3",
                       "--set", f"init_checkpoint={s3.uri('kill/k/best/model.pt', query=True)}",
                       env=env, cwd=tmp_path_factory.mktemp("e"))
    return f"runs-{form}/e", env, query, r


@pytest.mark.parametrize("form", ["AWS_ENDPOINT_URL", "endpoint_override"])
def test_a_search_writes_everything_to_the_bucket_and_what_it_prints_runs(s3, killed, tmp_path_factory, tmp_path, form):
    prefix, env, query, r = searched(s3, form, killed, tmp_path_factory)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    keys = set(s3.keys(f"{prefix}/"))
    for name in ("search.yaml", "trials.csv", "trials.parquet", "curves.csv", "report.html", "optuna.db",
                 "best/config.yaml", "best/model.pt", "best/classes.txt"):
        assert f"{prefix}/{name}" in keys, name
    assert len(helpers.read_table(io.BytesIO(s3.read(f"{prefix}/trials.csv")))) == (3 if query else 8)
    # the retrain command, as printed, from another folder
    retrain = next(ln for ln in r.stdout.splitlines() if ln.startswith("exported: ")).split("(retrain: ", 1)[1]
    retrain = retrain.rsplit("), ", 2)[0]
    assert retrain.startswith("python -m core.train --config ")
    t = run_printed(retrain + " --set epochs=1 --quiet", env, tmp_path)
    assert t.returncode == 0 and "done: status ok" in t.stdout, t.stderr
    # search.export rewrites the outputs from the bucket
    before = s3.read(f"{prefix}/trials.csv")
    s3.client().delete_object(Bucket=s3.bucket, Key=f"{prefix}/trials.csv")
    x = subprocess.run([sys.executable, "-m", "search.export", s3.uri(prefix, query=query)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert x.returncode == 0, x.stderr
    assert s3.read(f"{prefix}/trials.csv") == before
    # and a search that starts from an exported model, read from the bucket on every trial: with the
    # ?endpoint_override= form the search above, with AWS_ENDPOINT_URL one more from that search's model
    if query:
        model = s3.uri("kill/k/best/model.pt", query=True)
        assert f"init_checkpoint: {model}" in s3.read(f"{prefix}/search.yaml").decode()
        return
    model = s3.uri(f"{prefix}/best/model.pt")
    r2 = helpers.search("--storage-path", tmp_path / "local", "--name", "init", "--num-samples", "1",
                        "--set", f"init_checkpoint={model}", env=env, cwd=tmp_path)
    assert r2.returncode == 0, r2.stdout[-3000:] + r2.stderr[-3000:]
    assert f"init_checkpoint: {model}" in (tmp_path / "local" / "init" / "search.yaml").read_text()


def test_a_killed_driver_resumes_from_the_bucket_in_another_folder_and_machine(s3, killed, tmp_path):
    """SIGKILL mid-search, then --resume from elsewhere: exactly --num-samples trials, none lost or repeated,
    and the Optuna study continued (the local file gone, as on another machine: fetched from the bucket)."""
    _, second, r = killed
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "continuing the copy from" in r.stdout
    table = helpers.read_table(io.BytesIO(s3.read("kill/k/trials.csv")))
    assert len(table) == 8 and sorted(table.trial_index) == list(range(8))
    assert set(table.status) <= {"completed", "stopped_early"}
    epochs = trial_epochs(s3, "kill/k/")
    assert len(epochs) == 8 and all(e == list(range(1, len(e) + 1)) for e in epochs.values()), epochs
    fetched = second / "results" / "k" / "optuna.db"
    st = optuna.load_study(study_name="k", storage=f"sqlite:///{fetched}")
    assert len(st.trials) == 8 and all(t.state.is_finished() for t in st.trials)
    (tmp_path / "bucket.db").write_bytes(s3.read("kill/k/optuna.db"))  # the bucket's snapshot: the finished study
    copy = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'bucket.db'}")
    assert [(t.params, t.state) for t in copy.trials] == [(t.params, t.state) for t in st.trials]


def test_bad_storage_is_refused_in_seconds_in_one_line(s3, tmp_path):
    silent = socket.socket()  # takes connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    wrong = {**s3.env(), "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "nope"}
    cases = [
        (s3.env(), "s3://no-such-bucket/x", "Bucket 'no-such-bucket' not found"),
        (wrong, s3.uri("x"), "the credentials are refused"),
        (s3.env(endpoint_env=False), f"s3://{s3.bucket}/x?endpoint_override=127.0.0.1:{helpers.free_port()}&scheme=http",
         "does not answer (Connection refused)"),
        # a server that takes the connection and never answers: the probe's own limit ends the wait
        # (BIRDTUNE_PROBE_TIMEOUT_S shortens the default 20 s; pyarrow alone would retry for minutes)
        ({**s3.env(endpoint_env=False), "BIRDTUNE_PROBE_TIMEOUT_S": "5"},
         f"s3://{s3.bucket}/x?endpoint_override=127.0.0.1:{silent.getsockname()[1]}&scheme=http",
         "no answer within 5 s"),
    ]
    try:
        for env, store, message in cases:
            r = helpers.search("--storage-path", store, "--name", "bad", env=env, cwd=tmp_path, timeout=120)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (store, r.stderr)
            assert "Ray" not in r.stdout and "Traceback" not in r.stderr, store
    finally:
        silent.close()
    assert not any(k.startswith("x/") for k in s3.keys(""))  # nothing written
    # a local Optuna study left by an earlier search of that name whose results are not in the bucket
    (tmp_path / "results" / "stale").mkdir(parents=True)
    (tmp_path / "results" / "stale" / "optuna.db").write_bytes(b"")
    r = helpers.search("--storage-path", s3.uri("y"), "--name", "stale", env=s3.env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: the Optuna study {tmp_path}/results/stale/optuna.db is left from an earlier search named 'stale' whose "
        f"results are not in s3://{s3.bucket}/y; a new search would continue it: remove it or pick another --name"], r.stderr


def test_a_storage_outage_ends_the_search_with_one_message_and_resume_finishes_it(tmp_path):
    """The S3 server stops answering mid-search (its process stopped: connections hang, data kept): the
    search ends within minutes with one message saying how to continue, and once it answers again,
    --resume completes with every trial."""
    server = s3server.start("outage")
    try:
        # the waits shortened as a user can: the storage checked every 5 s (default 60 s), the write probe
        # (default 20 s), Ray's state upload (120 s)
        env = {**server.env(), "BIRDTUNE_STORAGE_CHECK_S": "5", "BIRDTUNE_PROBE_TIMEOUT_S": "5",
               "BIRDTUNE_SYNC_TIMEOUT_S": "20"}
        store = server.uri("o")
        proc = helpers.search("--storage-path", store, "--name", "o", "--num-samples", "4", "--concurrency", "1",
                              env=env, cwd=tmp_path, popen=True, start_new_session=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        assert helpers.wait_for(lambda: sum("/4 trial" in ln for ln in lines) >= 2, 240, every=0.2), "".join(lines)
        server.pause()
        try:
            proc.wait(timeout=300)  # (Ray's own uploads would retry for 30 minutes)
        finally:
            server.resume()
        out = "".join(lines)
        # found by the check every 5 s and its 5 s probe (what the message names), then the process ends
        assert proc.returncode == 1, (proc.returncode, out[-3000:])
        assert "Traceback" not in out and "stopped answering during the search (no answer within 5 s)" in out, out[-3000:]
        assert "python -m search.run --name o --resume --storage-path s3://outage/o" in out
        r = helpers.search("--storage-path", store, "--name", "o", "--resume", env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        table = helpers.read_table(io.BytesIO(server.read("o/o/trials.csv")))
        assert len(table) == 4 and set(table.status) <= {"completed", "stopped_early"}, table
        epochs = trial_epochs(server, "o/o/")
        assert all(e == list(range(1, len(e) + 1)) for e in epochs.values()), epochs
    finally:
        server.stop()
