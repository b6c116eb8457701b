"""tests/bench/replay.py: the simulator makes the decisions Ray's controller makes, and its statistics are the
ones it claims. The LCBench checks need ../shared/benchmarks/lcbench (CI has it)."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent / "bench"
sys.path.insert(0, str(BENCH))

import lcbench  # noqa: E402
from helpers import TOY  # noqa: E402
import replay  # noqa: E402

# .ci/run sets BIRDTUNE_REQUIRE_LCBENCH: there these tests run (and fail without the surrogate), never skip
needs_lcbench = pytest.mark.skipif(not (lcbench.DEFAULT_DIR / "model.onnx").is_file()
                                   and not os.environ.get("BIRDTUNE_REQUIRE_LCBENCH"),
                                   reason=f"the LCBench surrogate is not in {lcbench.DEFAULT_DIR}")


SEEDS, TRIALS, TASK = [0, 1], 8, "3945"


COMPUTE = 3  # an epoch budget of 3 full-length trials (156 epochs)


@pytest.fixture(scope="module")
def ray_traces() -> dict[tuple[int, int], list]:
    """Both seeds' real searches, of TRIALS trials and with an epoch budget (compute), in one Ray instance."""
    r = subprocess.run([sys.executable, str(BENCH / "ray_trace.py"), "--task", TASK, "--seed",
                        ",".join(map(str, SEEDS)), "--trials", str(TRIALS), "--compute", f"0,{COMPUTE}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return {(int(line.split(" ", 3)[1]), int(line.split(" ", 3)[2])): json.loads(line.split(" ", 3)[3])
            for line in r.stdout.splitlines() if line.startswith("TRACE ")}


@needs_lcbench
@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_replay_suggests_and_stops_as_a_real_ray_search(ray_traces, seed):
    """A real Tuner (birdtune's default searcher and scheduler, one worker, a trainable answering from the
    surrogate) and the replay of the same seed: the same configs in the same order, each trial stopped at the
    same epoch."""
    trials, task = TRIALS, TASK
    real = ray_traces[(seed, 0)]
    sim = replay.simulate("birdtune", "lcbench", task, trials, 1, seed, trace=True)["trace"]
    assert len(real) == len(sim) == trials
    for i, (ray_trial, (_, config, epochs)) in enumerate(zip(real, sim)):
        assert ray_trial["config"].keys() == config.keys()
        for k, v in config.items():
            assert ray_trial["config"][k] == pytest.approx(v, rel=1e-9), (i, k)
        assert ray_trial["epochs"] == epochs, (i, ray_trial["epochs"], epochs)
    stopped = [e for _, _, e in sim]
    assert min(stopped) < lcbench.EPOCHS and max(stopped) == lcbench.EPOCHS  # ASHA stopped some, not all


@needs_lcbench
@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_an_equal_compute_replay_is_what_an_epoch_budget_search_does(ray_traces, seed):
    """A real Tuner built as `--epoch-budget` builds it (the budget's meter as its stopper, the searcher gated by
    it) and the replay's compute cell: the same trials, each ending at the same epoch, the last cut where the
    budget ran out."""
    real = ray_traces[(seed, COMPUTE)]
    sim = replay.simulate("birdtune", "lcbench", TASK, None, 1, seed, trace=True, compute=COMPUTE)
    assert [t["epochs"] for t in real] == [e for _, _, e in sim["trace"]]
    for ray_trial, (_, config, _) in zip(real, sim["trace"]):
        assert ray_trial["config"] == pytest.approx(config, rel=1e-9)
    assert sum(t["epochs"] for t in real) == sim["epochs"] == COMPUTE * lcbench.EPOCHS


@needs_lcbench
def test_surrogate_curves_and_space():
    s = lcbench.Surrogate()
    d = s.defaults()
    assert d == dict(batch_size=91, learning_rate=pytest.approx(0.0031622777), momentum=0.545,
                     weight_decay=pytest.approx(0.050005), num_layers=3, max_units=256, max_dropout=0.5)
    acc, secs = s.curves("3945", [d, {**d, "learning_rate": 0.09}])
    assert acc.shape == secs.shape == (2, 52) and np.isfinite(acc).all() and (secs > 0).all()
    assert 0 < acc.min() and acc.max() <= 100 and acc[0, -1] > acc[0, 0]  # it learns
    space = s.space()
    assert space.epochs == 52 and space.points == [d]
    dists = space.distributions()
    assert list(dists) == list(lcbench.INPUTS)
    assert dists["learning_rate"]["log"] and dists["batch_size"]["kind"] == "int" and not dists["momentum"]["log"]


def test_missing_lcbench_folder_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "replay.py"), "--benchmark", "lcbench", "--lcbench-dir",
                        str(tmp_path / "nowhere"), "--seeds", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "LCBench surrogate not found" in lines[0] and "--lcbench-dir" in lines[0], r.stderr


@needs_lcbench
def test_unknown_task_is_one_line_and_exit_2():
    r = subprocess.run([sys.executable, str(BENCH / "replay.py"), "--benchmark", "lcbench", "--tasks", "3945,42",
                        "--seeds", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "unknown lcbench task(s) 42; valid: 3945," in r.stderr


def test_task_selections_name_the_development_the_held_out_or_the_given_tasks():
    import benchmarks

    class Bench:
        name, tasks, dev_tasks = "b", [1, 2, 3, 4], [2, 4]

    assert benchmarks.select_tasks(Bench, None) == benchmarks.select_tasks(Bench, "dev") == ["2", "4"]
    assert benchmarks.select_tasks(Bench, "held") == ["1", "3"]
    assert benchmarks.select_tasks(Bench, "all") == ["1", "2", "3", "4"]
    assert benchmarks.select_tasks(Bench, "3,1") == ["3", "1"]
    with pytest.raises(benchmarks.BadBenchmark, match="unknown b task.s. held1; valid: 1, 2, 3, 4"):
        benchmarks.select_tasks(Bench, "held1")

    class AllDev(Bench):
        dev_tasks = [1, 2, 3, 4]

    with pytest.raises(benchmarks.BadBenchmark, match="b has no held-out tasks; its tasks: 1, 2, 3, 4 .development"):
        benchmarks.select_tasks(AllDev, "held")


def test_holm_adjustment():
    assert replay.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert replay.holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    assert replay.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_summary_pairs_seeds_and_tasks():
    """Aggregate rows: paired differences over (task, seed), per-task wins, quality and epochs against
    random_full, computed from the runs they summarise."""
    rows = []
    rng = np.random.default_rng(0)
    for task in ("a", "b"):
        for seed in range(12):
            base = rng.uniform(0.2, 0.8)
            for method, delta, epochs, q in (("random_full", 0.1, 100, 0.9), ("stock", 0.0, 40, 0.88),
                                             ("birdtune", -0.2 if task == "a" else 0.05, 25, 0.9)):
                rows.append(dict(benchmark="x", task=task, method=method, budget=16, workers=2, seed=seed,
                                 quality=q, regret=base + delta, epochs=epochs, trials=16, suggest_ms=1.0))
    per_task, agg = replay.summarize(rows, ["random_full", "stock", "birdtune"])
    bt = next(r for r in agg if r["method"] == "birdtune")
    assert bt["task"] == "all" and bt["tasks"] == 2 and bt["seeds"] == 12
    assert bt["diff_vs_stock"] == pytest.approx((-0.2 + 0.05) / 2)
    assert bt["diff_ci_low"] <= bt["diff_vs_stock"] <= bt["diff_ci_high"]
    assert bt["wins_vs_stock"] == 1  # better on task a only
    assert bt["epochs_fraction"] == pytest.approx(0.25) and bt["quality_vs_random_full"] == pytest.approx(1.0)
    assert bt["p_vs_random_full"] < 0.001 and not math.isnan(bt["p_vs_stock_holm"])
    keys = {"benchmark", "method", "budget", "workers", "tasks", "seeds", "mean_norm_regret", "diff_vs_stock",
            "diff_ci_low", "diff_ci_high", "p_vs_stock", "p_vs_stock_holm", "p_vs_random_full_holm",
            "wins_vs_stock", "quality_vs_random_full", "epochs_fraction"}
    assert keys <= set(bt)
    assert {r["task"] for r in per_task} == {"a", "b"} and len(per_task) == 6




def test_a_benchmark_from_a_file_replays_in_equal_compute_cells(tmp_path):
    """The protocol: a toy benchmark with a categorical and a conditional parameter, loaded from a file as
    FILE.py:NAME (a callable returning it), replayed in compute cells; the JSON carries the aggregate keys."""
    (tmp_path / "toy.py").write_text(TOY)
    out = tmp_path / "toy.json"
    # a peer recorded on the one development task, far behind: the test over runs (one task) says so
    peer = [dict(tool="p", method="p-x", task="a", seed=s, workers=2, compute=c, quality=0.0, regret=2.0 + s,
                 epochs=9 * c, overshoot=0) for c in (3, 6) for s in range(5)]
    (tmp_path / "peers-toy.json").write_text(json.dumps(dict(benchmark="toy", tools={}, errors=0, runs=peer)))
    r = subprocess.run([sys.executable, str(BENCH / "replay.py"), "--benchmark", f"{tmp_path / 'toy.py'}:make",
                        "--compute", "3,6", "--workers", "2", "--seeds", "4", "--processes", "1", "--json", str(out),
                        "--peers", str(tmp_path / "peers-toy.json")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "toy" and data["tasks"] == ["a"]  # the development tasks by default
    agg = [row for row in data["runs"] if row["task"] == "all"]
    assert {(row["compute"], row["method"]) for row in agg} == {(c, m) for c in (3, 6)
                                                               for m in ("random_full", "stock", "birdtune", "p-x")}
    for c in (3, 6):  # 4 runs all below the peer's 5: the exact one-sided Mann-Whitney p is 1 / C(9, 4)
        bt = next(row for row in agg if row["method"] == "birdtune" and row["compute"] == c)
        assert math.isclose(bt["p_vs"]["p-x"], 1 / 126) and bt["p_vs_holm"]["p-x"] >= 1 / 126
        line = re.search(rf"compute {c} +2 birdtune vs peers \(Holm p\): p-x (\S+)\n", r.stdout)
        assert line and line.group(1) == f"{bt['p_vs_holm']['p-x']:.2g}", r.stdout
    methods = {"random_full", "stock", "birdtune", "p-x"}
    for row in agg:
        assert row["budget"] is None and row["ci_low"] <= row["mean_norm_regret"] <= row["ci_high"]
        assert 1 <= row["mean_rank"] <= 4 and set(row["p_vs_holm"]) == methods - {row["method"]}
        if row["method"] == "p-x":
            continue
        # the budget is the compute cell's: every method spends at most its epochs (random_full exactly)
        assert row["epochs"] <= row["compute"] * 9 + 1
        if row["method"] == "random_full":
            assert row["epochs"] == row["compute"] * 9
    cache = json.loads((tmp_path / "reference-toy.json").read_text())  # beside the benchmark's file
    assert any(k.startswith("a:10000:") for k in cache)  # its reference, from 10,000 random configs, cached


def test_a_benchmark_missing_part_of_the_protocol_is_one_line(tmp_path):
    (tmp_path / "bad.py").write_text("class Half:\n    name = 'half'\n    tasks = ['a']\n")
    r = subprocess.run([sys.executable, str(BENCH / "replay.py"), "--benchmark", f"{tmp_path / 'bad.py'}:Half",
                        "--seeds", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"replay: {tmp_path / 'bad.py'}:Half lacks dev_tasks, space, curves (see tests/bench/benchmarks.py)"


def test_worker_utilisation_accounts_for_every_worker_second(tmp_path):
    """--utilisation: busy time plus each kind of idle time is the workers' whole time, and the figures are the
    simulation's (the busy worker-time equals the epochs run at the toy's 1 s each)."""
    (tmp_path / "toy.py").write_text(TOY)
    import replay

    r = replay.utilisation(f"{tmp_path / 'toy.py'}:make", "a", trials=24, workers=4)
    assert r["trials"] == 24 and r["workers"] == 4
    parts = r["utilisation"] + r["suggest_wait"] + r["result_wait"] + r["no_trial"]
    assert parts == pytest.approx(1.0) and 0 < r["utilisation"] <= 1 and r["no_trial"] >= 0
    assert r["utilisation"] == pytest.approx(r["epochs"] * 1.0 / (4 * r["wall_s"]))  # every epoch takes 1 s
    assert r["utilisation"] <= r["utilisation_until_last_start"] <= 1


def test_the_tail_fill_keeps_the_replays_workers_busy_after_the_last_trial_starts_and_ends_no_later(tmp_path,
                                                                                                    monkeypatch):
    """The same search with the tail fill (search.scheduler.TailFill, forced on at 4 workers) and without: the
    fill continues stopped trials once the last one has started, its epochs counted as busy time, and the
    search ends when the search's own last trial does (1 s epochs: nothing fills past it). The suggestions'
    measured time delays the simulated trials: a clock that ticks 1 ms a reading makes both runs the same
    search."""
    (tmp_path / "toy.py").write_text(TOY)
    import itertools

    import replay

    ticks = itertools.count()
    monkeypatch.setattr(replay.time, "perf_counter", lambda: next(ticks) * 1e-3)

    bench = f"{tmp_path / 'toy.py'}:make"
    off = replay.utilisation(bench, "a", trials=24, workers=4, method="birdtune@asha:tail_fill=off")
    on = replay.utilisation(bench, "a", trials=24, workers=4, method="birdtune@asha:tail_fill=on")
    assert off["continued"] == 0 and on["continued"] >= 1 and on["continued_epochs"] >= 1
    assert on["epochs"] == off["epochs"] + on["continued_epochs"]  # the same search, plus the continued epochs
    assert on["wall_s"] <= off["wall_s"] + 1e-9 and on["utilisation"] > off["utilisation"]
    assert on["utilisation"] == pytest.approx(on["epochs"] * 1.0 / (4 * on["wall_s"]))


def test_peers_join_the_tables_and_a_cell_recorded_on_some_tasks_is_left_out(tmp_path, capsys):
    def run(method, task, seed, compute, regret):
        return dict(tool=method.split("-")[0], method=method, task=task, seed=seed, workers=2, compute=compute,
                    quality=1 - regret, regret=regret, epochs=27 * compute // 3, overshoot=0)

    peers = [run("p1-x", t, s, 3, 0.5 + 0.1 * s) for t in "ab" for s in range(2)] + [run("p2-y", "a", 0, 6, 0.1)]
    path = tmp_path / "peers-toy.json"
    path.write_text(json.dumps(dict(benchmark="toy", tools={}, seeds=[0, 1], errors=0, runs=peers)))
    got = replay.read_peers(str(path), "toy", ["a", "b"], [("compute", 3, 2), ("compute", 6, 2)])
    assert sorted({(r["method"], r["compute"]) for r in got}) == [("p1-x", 3)]
    assert "p2-y left out at compute 6 x 2: recorded on 1 of the 2 tasks" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds toy, not lcbench"):
        replay.read_peers(str(path), "lcbench", ["a"], [("compute", 3, 2)])
    mine = [dict(run(m, t, s, 3, r), benchmark="toy", suggest_ms=1.0) for t in "ab" for s in range(4)
            for m, r in (("birdtune", 0.1 + 0.01 * s), ("stock", 0.3), ("random_full", 0.4))]
    _, agg = replay.summarize(mine + got, ["random_full", "stock", "birdtune"])
    bt = next(r for r in agg if r["method"] == "birdtune")
    assert bt["compute"] == 3 and bt["mean_rank"] == 1.0 and bt["seeds"] == 4 and bt["tasks"] == 2
    assert set(bt["p_vs_holm"]) == {"random_full", "stock", "p1-x"}
    assert bt["ci_low"] <= bt["mean_norm_regret"] <= bt["ci_high"]
    assert math.isclose(bt["p_vs"]["p1-x"], 0.25)  # two tasks, both lower: the exact one-sided Wilcoxon p
    p1 = next(r for r in agg if r["method"] == "p1-x")
    assert p1["mean_rank"] == 4.0 and math.isclose(p1["mean_norm_regret"], 0.55)
    # one task (birdtune's own tables): no test over tasks, so the two methods' runs, unpaired (Mann-Whitney U)
    one = [r for r in mine + got if r["task"] == "a"]
    _, agg = replay.summarize(one, ["random_full", "stock", "birdtune"])
    bt = next(r for r in agg if r["method"] == "birdtune")
    # birdtune's 4 runs all below p1-x's 2: the exact one-sided p is 1 / C(6, 2)
    assert math.isclose(bt["p_vs"]["p1-x"], 1 / 15) and bt["p_vs_holm"]["p1-x"] >= bt["p_vs"]["p1-x"]
    p1 = next(r for r in agg if r["method"] == "p1-x")
    assert math.isclose(p1["p_vs"]["birdtune"], 1.0)


def test_the_anytime_plot_draws_a_line_per_method_past_the_colour_cycle(tmp_path):
    rows = [dict(method=f"m{k}", task="a", seed=0, workers=2, compute=3, epochs=27, regret=0.1,
                 anytime=[[1, 1.0], [9, 0.5 / (k + 1)], [27, 0.1]]) for k in range(12)]
    out = tmp_path / "plot.png"
    replay.anytime_plot(rows, [f"m{k}" for k in range(12)], ("compute", 3, 2), out, "toy")
    assert out.stat().st_size > 10_000


QUICK = '''
class Quick(Toy):  # knows its references (as a recorded table does): adding one is a read and a write
    name = "quick"
    tasks = dev_tasks = [f"t{i}" for i in range(400)]

    def reference(self, task):
        return 1.0, 0.5


def quick():
    return Quick()
'''


def test_processes_adding_references_at_once_keep_every_one(tmp_path):
    """A replay's processes and a peer recording may add references for different tasks at the same time:
    each lands in the cache (none lost to another's write), and no reader sees half a file."""
    (tmp_path / "toy.py").write_text(TOY + QUICK)
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import benchmarks; "
            "b = benchmarks.load(sys.argv[3]); [benchmarks.reference(b, t) for t in b.tasks[int(sys.argv[4])::4]]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(BENCH), str(BENCH.parents[1]),
                               f"{tmp_path / 'toy.py'}:quick", str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    cache = json.loads((tmp_path / "reference-quick.json").read_text())
    assert sorted(k.split(":")[0] for k in cache) == sorted(f"t{i}" for i in range(400))


@pytest.mark.parametrize("name", [pytest.param("lcbench", marks=needs_lcbench), "birdtune-default", "birdtune-tiny"])
def test_the_built_in_benchmarks_references_are_committed_for_their_current_files(name):
    """A change to a built-in benchmark's file keys its references anew: the committed cache must hold every
    task's under the file as it is (else each fresh clone's replays spend about 10 s a task computing them
    again) and nothing else."""
    import benchmarks
    bench = benchmarks.load(name)
    keys = [benchmarks.reference_cache(bench, str(t)) for t in bench.tasks]
    cache = keys[0][0]
    assert cache.parent == benchmarks.DATA
    committed = json.loads(cache.read_text())
    stale = sorted(set(committed) - {k for _, k in keys})
    missing = [k for _, k in keys if k not in committed]
    assert not missing and not stale, (f"{cache.name}: missing {missing[:3]}, stale {stale[:3]}; run "
                                       f"benchmarks.reference for every task of {name} and drop the stale keys")


def test_rung_loss_shows_the_best_config_among_fewer_configs_at_each_rung(tmp_path):
    """tests/bench/rung_loss.py: the best config among those a search ran to a higher rung is one of fewer, so its
    regret is never lower; the pick is one of those tried; per task (--per-task) too, the tasks' rows averaging
    to the summary's; a bad method is one line."""
    (tmp_path / "toy.py").write_text(TOY)
    cmd = [sys.executable, str(BENCH / "rung_loss.py"), "birdtune", "--benchmark", f"{tmp_path / 'toy.py'}:make",
           "--compute", "3", "--workers", "2", "--seeds", "3", "--processes", "1", "--tasks", "a,b", "--per-task"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = re.findall(r"^  (it tried|it ran to (\d+)\+ epochs|\(its pick\)) +(-?[\d.]+)  \((\d+) searches\)$", r.stdout, re.M)
    assert rows[0][0] == "it tried" and rows[-1][0] == "(its pick)" and len(rows) >= 4, r.stdout
    searches = 2 * 3  # tasks x seeds
    assert [int(x[3]) for x in (rows[0], rows[-1])] == [searches, searches]
    head = re.search(r"^  task +(.+)$", r.stdout, re.M).group(1).split()
    assert head[0] == "tried" and head[-1] == "pick" and len(head) == len(rows), r.stdout
    per_task = {m[0]: m[1].split() for m in re.findall(r"^  ([ab]) +(.+)$", r.stdout, re.M)}
    assert sorted(per_task) == ["a", "b"], r.stdout
    # per task too, the pick and each rung every search reached are no better than the best config tried (a rung
    # only some searches reached averages over fewer seeds, so it may be)
    everywhere = [i for i, x in enumerate(rows) if int(x[3]) == searches]  # rungs every search reached, tried, pick
    for cells in per_task.values():
        assert all(float(cells[0]) <= float(cells[i]) for i in everywhere), r.stdout
    # equal seeds per task: the tasks' mean of the first and last columns is the summary's
    for col, row in ((0, rows[0]), (-1, rows[-1])):
        assert abs(np.mean([float(c[col]) for c in per_task.values()]) - float(row[2])) <= 0.0015, r.stdout
    full = [(float(rows[i][2]), int(rows[i][3])) for i in everywhere[1:-1]]
    assert full and [v for v, _ in full] == sorted(v for v, _ in full)
    assert float(rows[0][2]) <= min(v for v, _ in full) and float(rows[0][2]) <= float(rows[-1][2])
    bad = subprocess.run(cmd[:2] + ["nope"] + cmd[3:], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("rung_loss: unknown searcher"), bad.stderr
