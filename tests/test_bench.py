"""The benchmark scripts run (at toy sizes): on the CPU here, their CUDA paths where a GPU exists."""
import re
from pathlib import Path

import pytest
import torch

from helpers import run_script

BENCH = Path(__file__).resolve().parent / "bench"
def bench(script, *args, timeout=600):
    return run_script(BENCH / script, *args, timeout=timeout)


def rates(out: str) -> dict[str, float]:
    return {m.group(1).strip(): float(m.group(2))
            for m in re.finditer(r"^(notebook loop|birdtune core\.engine\.fit|compute-only bound)\s+([\d.]+)", out, re.M)}


def test_throughput_script_on_cpu():
    r = bench("throughput.py", "--device", "cpu", "--model", "test_efficientnet", "--size", "tiny", "--steps", "2",
              "--batch", "16", "--workers", "0", "--repeats", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    got = rates(r.stdout)
    assert set(got) == {"notebook loop", "birdtune core.engine.fit", "compute-only bound"} and min(got.values()) > 0
    assert r.stdout.count("round ") == 2 and "median of 2 round(s)" in r.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_only_scripts_refuse_cleanly_without_a_gpu():
    r = bench("packing.py")
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr
    r = bench("throughput.py", "--device", "cuda")
    assert r.returncode == 2 and "no CUDA device" in r.stderr


@pytest.mark.gpu
def test_throughput_script_on_cuda():
    r = bench("throughput.py", "--device", "cuda", "--model", "test_efficientnet", "--size", "tiny", "--steps", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(rates(r.stdout)) == 3


@pytest.mark.gpu
def test_packing_script_on_cuda():
    r = bench("packing.py", "--model", "test_efficientnet", "--size", "tiny", "--img-size", "32", "--epochs", "1",
              "--packs", "1,2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"^\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+x$", r.stdout, re.M), r.stdout


@pytest.mark.slow
def test_overhead_script_runs_a_small_search_and_prints_a_ratio_consistent_with_its_times():
    r = bench("overhead.py", "--space", "smoke", "--trials", "3", "--epochs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wall = re.search(r"search wall time \(Tuner.fit\): ([\d.]+) s -> overhead (-?[\d.]+) %", r.stdout)
    compute = re.search(r"/ concurrency = ([\d.]+) s", r.stdout)
    assert wall and compute, r.stdout
    # the ratio printed is the one of the two times printed beside it (to their rounding)
    w, c = float(wall.group(1)), float(compute.group(1))
    assert float(wall.group(2)) == pytest.approx(100 * (w / c - 1), abs=100 * (0.05 / c + w * 0.05 / c**2) + 0.05)
    assert "actors reused between trials: True" in r.stdout  # one local node
    assert len(re.findall(r"^  \w{8}: start", r.stdout, re.M)) == 3  # every trial on the timeline


def test_replay_script_writes_the_table_it_prints(tmp_path):
    """tests/bench/replay.py on the recorded tiny-demo curves, small: the JSON holds one aggregate row per
    method and cell with the keys the issue asks for, and the printed table shows those same figures."""
    import json

    r = bench("replay.py", "--size", "tiny", "--seeds", "4", "--budgets", "16", "--workers", "2",
              "--methods", "random_full,stock,birdtune", "--json", str(tmp_path / "r.json"), "--processes", "1",
              timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "r.json").read_text())
    agg = {row["method"]: row for row in out["runs"] if row["task"] == "all"}
    assert set(agg) == {"random_full", "stock", "birdtune"}
    keys = {"benchmark", "method", "budget", "workers", "tasks", "seeds", "mean_norm_regret", "diff_vs_stock",
            "diff_ci_low", "diff_ci_high", "p_vs_stock", "p_vs_stock_holm", "p_vs_random_full_holm",
            "wins_vs_stock", "quality_vs_random_full", "epochs_fraction"}
    for row in agg.values():
        assert keys <= set(row) and row["budget"] == 16 and row["workers"] == 2 and row["seeds"] == 4
        assert row["benchmark"] == "birdtune-tiny" and row["tasks"] == 1
    assert agg["random_full"]["epochs_fraction"] == 1.0 and agg["stock"]["epochs_fraction"] < 1.0
    bt = agg["birdtune"]
    assert bt["diff_ci_low"] <= bt["diff_vs_stock"] <= bt["diff_ci_high"]
    per_task = [row for row in out["runs"] if row["task"] != "all"]
    assert {row["method"] for row in per_task} == set(agg) and all(row["seeds"] == 4 for row in per_task)
    assert len(out["rank_correlation_by_epoch"]) == 8
    # the printed table is the JSON's: every method's line carries its regret, quality and epochs fraction
    for method, row in agg.items():
        line = next(ln for ln in r.stdout.splitlines() if re.match(rf"\s+16 trials\s+2 {method}\s", ln))
        cells = line.split()
        assert cells[4] == f"{row['mean_norm_regret']:.3f}" and cells[-2] == f"{row['epochs_fraction']:.2f}"
        assert cells[-4] == f"{row['quality_vs_random_full']:.4f}" and cells[-3] == f"{row['epochs']:.1f}"