"""The driver's live view, driven by scripted Tune callbacks: a redrawn block on a terminal, plain lines elsewhere."""
import io
from types import SimpleNamespace

from search.progress import LiveView, duration


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def trial(tid, number, lr, last=None):
    """A stand-in for Ray's Trial: its id, its experiment tag (creation counter first, 1-based under a
    Searcher), its config and last result."""
    return SimpleNamespace(trial_id=tid, experiment_tag=f"{number}_lr={lr}", config={"lr": lr, "drop_rate": 0.25},
                           last_result=last or {}, status="RUNNING")


def drive(view, clock):
    a, b, c = trial("a", 1, 0.01), trial("b", 2, 0.002), trial("c", 3, 0.1)
    for t in (a, b):
        view.on_trial_start(0, [], t)
    clock.t += 5
    view.on_trial_result(0, [], a, {"epoch": 1, "cmap": 0.70})
    view.on_trial_result(0, [], b, {"epoch": 1, "cmap": 0.60})
    clock.t += 5
    b.last_result = {"epoch": 1, "cmap": 0.60}
    view.on_trial_complete(0, [], b)  # ASHA cut it at epoch 1 of 3
    view.on_trial_start(0, [], c)
    view.on_trial_result(0, [], c, {"epoch": 1, "cmap": 0.0, "status": "diverged"})
    c.last_result = {"epoch": 1, "cmap": 0.0, "status": "diverged"}
    view.on_trial_complete(0, [], c)
    clock.t += 10
    view.on_trial_result(0, [], a, {"epoch": 3, "cmap": 0.80})
    a.last_result = {"epoch": 3, "cmap": 0.80}
    view.on_trial_complete(0, [], a)
    view.on_experiment_end([])
    return view


def test_off_a_terminal_one_plain_line_per_finished_trial():
    clock, out = Clock(), io.StringIO()
    drive(LiveView(3, 4, ["lr", "drop_rate"], "http://127.0.0.1:8265", out=out, tty=False, clock=clock), clock)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue() and len(lines) == 3
    # trials are named by trial_index, as in trials.csv; which cmAP is whose is said
    assert lines[0] == ("[   10s]   1/4 trial   1 stopped early at epoch 1   its best cmap 0.6000 | "
                        "best so far 0.7000 (trial 0)")
    assert "trial   2 diverged at epoch 1" in lines[1] and "its best cmap nan" in lines[1]  # never "best"
    assert lines[2].startswith("[   20s]   3/4 trial   0 completed 3 epochs") and lines[2].endswith(
        "best so far 0.8000 (trial 0)")


def test_a_trial_ended_while_it_waits_for_its_worker_gets_its_line_once():
    clock, out = Clock(), io.StringIO()
    view = LiveView(3, 4, ["lr", "drop_rate"], "http://127.0.0.1:8265", out=out, tty=False, clock=clock)
    earlier = trial("e", 1, 0.01)  # cut the same way in a run before this resume: counted, no new line
    earlier.status = "TERMINATED"
    view.on_step_begin(0, [earlier])
    a, w = trial("a", 2, 0.002), trial("w", 3, 0.1)
    view.on_trial_start(0, [], a)
    view.on_trial_result(0, [], a, {"epoch": 1, "cmap": 0.5})
    a.last_result, w.status, w.last_result = {"epoch": 1, "cmap": 0.5}, "TERMINATED", {"trial_id": "w"}
    view.on_experiment_end([earlier, a, w])  # the budget ends with a running and w still waiting
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "trial   1 unfinished at epoch 1" in lines[0], lines
    assert "trial   2 unfinished at epoch 0" in lines[1] and lines[1].startswith("[    0s]   3/4"), lines


def test_on_a_terminal_the_block_is_redrawn_in_place():
    clock, out = Clock(), io.StringIO()
    drive(LiveView(3, 4, ["lr", "drop_rate"], "http://127.0.0.1:8265", out=out, tty=True, clock=clock), clock)
    text = out.getvalue()
    assert "\x1b[3F\x1b[J" in text  # moved up over the 3-line block and erased it before redrawing
    final = text.rsplit("\x1b[J", 1)[1].splitlines()
    assert final[0] == ("birdtune  3/4 trials done | running 0 | stopped early 1 | completed 1 | errored 0 | "
                        "diverged 1 | elapsed 20s | left ~7s")
    assert final[1] == "best cmap so far 0.8000 (trial 0, epoch 3): lr=0.01 drop_rate=0.25"
    assert final[2].startswith("dashboard http://127.0.0.1:8265") and "ray get-auth-token" in final[2]
    # the finished-trial lines stay on screen above the block
    assert text.count("1/4 trial   1 stopped early") == 1 and "3/4 trial   0 completed 3 epochs" in text


def test_before_any_result_the_block_says_so_and_has_no_estimate():
    clock, out = Clock(), io.StringIO()
    view = LiveView(3, 4, ["lr"], None, out=out, tty=True, clock=clock)
    view.on_trial_start(0, [], trial("a", 1, 0.01))
    assert view.block() == ["birdtune  0/4 trials done | running 1 | stopped early 0 | completed 0 | errored 0 | "
                            "elapsed 0s | left ?", "best cmap: no epoch finished yet"]
    assert duration(59) == "59s" and duration(61) == "1m01s" and duration(3 * 3600 + 120) == "3h02m"


def test_trials_the_search_ends_around_are_shown_unfinished():
    """--time-budget (or an interruption) ends the search with trials still running: Tune calls no
    on_trial_complete for them, so the view says so at the end instead of leaving them out."""
    clock, out = Clock(), io.StringIO()
    view = LiveView(3, 3, ["lr"], None, out=out, tty=False, clock=clock, first_number=0)  # random search: 0-based
    a, b = trial("a", 0, 0.01), trial("b", 1, 0.02)
    view.on_trial_start(0, [], a)
    view.on_trial_start(0, [], b)
    view.on_trial_result(0, [], a, {"epoch": 1, "cmap": 0.5})
    view.on_trial_result(0, [], b, {"epoch": 2, "cmap": 0.6})
    a.last_result = {"epoch": 1, "cmap": 0.5}
    view.on_trial_complete(0, [], a)
    view.on_experiment_end([])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[    0s]   1/3 trial   0 stopped early at epoch 1")
    assert lines[1].startswith("[    0s]   2/3 trial   1 unfinished at epoch 2") and "its best cmap 0.6000" in lines[1]
    assert view.counts["unfinished"] == 1 and view.block()[0].endswith("unfinished 1 | elapsed 0s | left ~0s")


def test_a_trial_the_tail_fill_continues_says_so_and_counts_once_as_it_ends_again():
    clock, out = Clock(), io.StringIO()
    view = LiveView(3, 2, ["lr", "drop_rate"], out=out, tty=False, clock=clock)
    a, b = trial("a", 1, 0.01), trial("b", 2, 0.002)
    for t in (a, b):
        view.on_trial_start(0, [], t)
    view.on_trial_result(0, [], b, {"epoch": 1, "cmap": 0.60})
    b.last_result = {"epoch": 1, "cmap": 0.60}
    view.on_trial_complete(0, [], b)  # ASHA stopped it
    clock.t += 5
    view.on_trial_start(0, [], b)  # the tail fill continues it
    view.on_trial_result(0, [], b, {"epoch": 2, "cmap": 0.65})
    view.on_trial_result(0, [], b, {"epoch": 3, "cmap": 0.75})
    b.last_result = {"epoch": 3, "cmap": 0.75}
    view.on_trial_complete(0, [], b)
    a.last_result = {"epoch": 3, "cmap": 0.70}
    view.on_trial_result(0, [], a, a.last_result)
    view.on_trial_complete(0, [], a)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[    0s]   1/2 trial   1 stopped early at epoch 1")
    assert lines[1] == "[    5s] trial   1 continued from epoch 1 on a worker the search's tail left idle"
    assert lines[2].startswith("[    5s]   1/2 trial   1 continued to 3 epochs") and "its best cmap 0.7500" in lines[2]
    assert lines[3].startswith("[    5s]   2/2 trial   0 completed 3 epochs") and len(lines) == 4
    assert view.counts["completed"] == 2 and view.counts["stopped_early"] == 0 and view.finished == 2
    assert view.continued == 1


def test_a_restored_trial_a_resume_starts_again_is_not_called_continued_and_counts_once():
    clock, out = Clock(), io.StringIO()
    view = LiveView(3, 2, ["lr", "drop_rate"], out=out, tty=False, clock=clock)
    cut = trial("a", 1, 0.01, last={"epoch": 2, "cmap": 0.5})
    cut.status = "TERMINATED"
    view.on_step_begin(0, [cut])  # restored: ended before this run (Ctrl-C cut it)
    assert view.finished == 1 and view.counts["stopped_early"] == 1
    cut.status = "RUNNING"
    view.on_trial_start(0, [cut], cut)  # the resume starts it again
    view.on_trial_result(0, [], cut, {"epoch": 3, "cmap": 0.8})
    cut.last_result = {"epoch": 3, "cmap": 0.8}
    view.on_trial_complete(0, [], cut)
    lines = out.getvalue().splitlines()
    assert lines == ["[    0s]   1/2 trial   0 completed 3 epochs         its best cmap 0.8000 | best so far 0.8000 "
                     "(trial 0)"], lines
    assert view.finished == 1 and view.counts == {**view.counts, "stopped_early": 0, "completed": 1}
    assert view.continued == 0
