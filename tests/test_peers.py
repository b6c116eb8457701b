"""The peers' equal-compute cost model (tests/bench/peers/common.py) on a toy benchmark: what a job is charged,
when one is refused, the clock, the record; and each tool's adapter, run through tests/bench/peers/run.py in
the tool's own venv (tests/bench/peers/make_venvs.py), with its budget accounting checked. The tools are
never birdtune's dependencies: an adapter's test runs where its venv has been made, and says how to make it
where it has not."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ENV, TOY

BENCH = Path(__file__).resolve().parent / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH / "peers"))

import benchmarks  # noqa: E402
import common  # noqa: E402
import make_venvs  # noqa: E402

A = {"optimizer": "adam", "lr": 3e-3, "width": 16}
B = {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.5, "width": 8}
C = {"optimizer": "adam", "lr": 1e-4, "width": 64}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.py"
    path.write_text(TOY)
    return f"{path}:make"


def test_a_job_is_charged_its_new_epochs_and_one_past_the_budget_is_refused(toy):
    bench = benchmarks.load(toy)
    cl = common.Cluster(bench, "a", seed=0, workers=2, budget=18)  # 2 full-length trials of 9 epochs
    assert cl.start("a", A, 3) and cl.start("b", B, 9) and cl.free() == 0 and cl.committed == 12
    job, config, fidelity, value = cl.next()  # A's 3 epochs of 1 s end first
    assert (job, fidelity, cl.now, cl.used, cl.committed) == ("a", 3, 3.0, 3, 9)
    assert value == pytest.approx(float(cl.curve(A)[0][2]))
    assert cl.start("a2", A, 9)  # continued from its checkpoint: charged epochs 4-9 only (3 + 9 + 6 = 18)
    assert not cl.start("c", C, 1) and cl.refused == 1  # 19 > 18: not started
    ends = [cl.next()[:3] for _ in range(2)]
    assert sorted((j, f) for j, _, f in ends) == [("a2", 9), ("b", 9)] and cl.now == 9.0  # 3 s + 6 epochs of 1 s
    assert (cl.used, cl.committed, cl.running()) == (18, 0, 0)
    assert cl.start("again", A, 9) and cl.committed == 0  # a fidelity already reached costs nothing
    cl.next()
    out = cl.result(A, tool="t", method="m", compute=2)
    assert (out["epochs"], out["overshoot"], out["refused"], out["trials"]) == (18, 0, 1, 2)
    best, median = benchmarks.reference(bench, "a")
    assert out["quality"] == pytest.approx(float(cl.curve(A)[0].max()))
    assert out["regret"] == pytest.approx((best - out["quality"]) / (best - median))
    assert out["anytime"][-1][0] == 18 and all(e2 >= e1 for (e1, _), (e2, _) in zip(out["anytime"], out["anytime"][1:]))


def test_the_clock_runs_jobs_on_their_own_epochs_seconds_and_ends_them_in_order(toy):
    cl = common.Cluster(benchmarks.load(toy), "a", seed=0, workers=3, budget=27)
    for job, fid in (("x", 5), ("y", 2), ("z", 7)):
        cl.start(job, dict(A, width=8 + fid), fid)
    assert [cl.next()[0] for _ in range(3)] == ["y", "x", "z"] and cl.now == 7.0


@pytest.mark.parametrize("tool", sorted(make_venvs.TOOLS))
def test_each_adapter_stays_within_its_budget_on_the_toy_benchmark(tool, toy, tmp_path):
    if make_venvs.version(tool) is None:
        pytest.skip(f"no venv for {tool}: python tests/bench/peers/make_venvs.py --tools {tool}")
    out = tmp_path / "runs.jsonl"
    r = subprocess.run([str(make_venvs.python(tool)), str(BENCH / "peers" / "run.py"), "--tool", tool,
                        "--benchmark", toy, "--tasks", "a", "--compute", "3", "--workers", "2", "--seeds", "0",
                        "--processes", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env={**ENV, "SYNETUNE_FOLDER": str(tmp_path / "st")})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    assert runs and not [x for x in runs if "error" in x], runs
    for x in runs:
        assert x["tool"] == tool and x["task"] == "a" and x["compute"] == 3 and x["workers"] == 2
        assert 0 < x["epochs"] <= 27 and x["overshoot"] == 0, x  # charged within the 3 x 9 epochs
        assert math.isfinite(x["quality"]) and math.isfinite(x["regret"]) and x["trials"] >= 1
        assert x["anytime"] and x["anytime"][-1][0] <= x["epochs"]
        assert set(x["pick"]) >= {"optimizer", "lr", "width"}
    # runs already in a merged recording (--skip) are not run again
    (tmp_path / "peers-toy.json").write_text(json.dumps(dict(runs=runs)))
    again = subprocess.run([str(make_venvs.python(tool)), str(BENCH / "peers" / "run.py"), "--tool", tool,
                            "--benchmark", toy, "--tasks", "a", "--compute", "3", "--workers", "2", "--seeds", "0-1",
                            "--processes", "1", "--skip", str(tmp_path / "peers-toy.json"), "--out",
                            str(tmp_path / "again.jsonl")], capture_output=True, text=True, timeout=600,
                           env={**ENV, "SYNETUNE_FOLDER": str(tmp_path / "st")})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert sorted((x["method"], x["seed"]) for x in map(json.loads, (tmp_path / "again.jsonl").read_text().splitlines())
                  ) == sorted((x["method"], 1) for x in runs)


def test_merging_a_new_recording_keeps_the_runs_recorded_before(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("peers_record", BENCH / "peers" / "record.py")
    record = importlib.util.module_from_spec(spec)  # (tests/bench/record.py has the same name)
    spec.loader.exec_module(record)
    monkeypatch.setattr(record, "DATA", tmp_path)
    run = dict(tool="dehb", method="dehb", task="1", seed=0, workers=2, compute=4, quality=0.9, regret=0.1,
               epochs=200, overshoot=0, refused=1, trials=9, seconds=0.1, anytime=[[4, 1.0], [200, 0.1]])
    (tmp_path / "peers-b.json").write_text(json.dumps(dict(benchmark="b", tools={"dehb": "0.1.2"}, seeds=[0],
                                                           errors=0, runs=[run])))
    (tmp_path / ".parts").mkdir()
    new = [dict(run, tool="smac", method="smac-hyperband", version="2.4.1", seed=1),
           dict(run, seed=0, quality=0.95),  # the same run recorded again: the new one counts
           dict(tool="smac", method="smac-hyperband", task="2", seed=0, workers=2, compute=4, error="Boom")]
    (tmp_path / ".parts" / "peers-b-smac.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new))
    data = json.loads(record.merge("b").read_text())
    assert data["tools"] == {"dehb": "0.1.2", "smac": "2.4.1"} and data["seeds"] == [0, 1] and data["errors"] == 1
    assert sorted((r["method"], r["seed"], r["quality"]) for r in data["runs"]) == [
        ("dehb", 0, 0.95), ("smac-hyperband", 1, 0.9)]
