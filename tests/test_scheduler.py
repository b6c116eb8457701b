"""birdtune's ASHA (search.scheduler) on scripted result streams: Ray's rule exactly without a budget, the
promotion budget, the factory."""
import pytest

from search.scheduler import BudgetedASHA, make_scheduler


class _T:
    def __init__(self, trial_id):
        self.trial_id, self.config, self.status = trial_id, {}, "RUNNING"


class Trial(_T):
    """What choose_trial_to_run reads of a Ray Trial."""

    def __init__(self, tid, status, checkpoint):
        super().__init__(tid)
        self.status, self.checkpoint, self.last_result = status, checkpoint, {}


class Controller:
    """What choose_trial_to_run reads of Ray's TuneController."""

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return self.trials


def test_budgeted_asha_without_a_budget_decides_as_rays_asha():
    """Contract: on random result streams (rungs, reduction factors, arrival orders) birdtune's ASHA with no
    budget stops exactly the trials Ray's ASHAScheduler stops, at the same epochs."""
    import numpy as np
    from ray.tune.schedulers import ASHAScheduler

    for seed in range(25):
        rng = np.random.default_rng(seed)
        max_t, grace, rf = int(rng.integers(3, 60)), int(rng.integers(1, 4)), int(rng.integers(2, 5))
        ray_asha = ASHAScheduler(time_attr="epoch", metric="cmap", mode="max", max_t=max_t, grace_period=grace,
                                 reduction_factor=rf)
        ours = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=max_t, grace_period=grace,
                            reduction_factor=rf, num_samples=20, budget=0)
        epochs, stopped = {f"t{i}": 0 for i in range(20)}, {}
        for tid in epochs:
            ray_asha.on_trial_add(None, _T(tid))
        while len(stopped) < len(epochs):
            tid = f"t{int(rng.integers(20))}"
            if tid in stopped:
                continue
            epochs[tid] += 1
            result = {"epoch": epochs[tid], "cmap": float(rng.uniform())}
            decision = ray_asha.on_trial_result(None, _T(tid), result)
            assert ours.on_trial_result(None, _T(tid), result) == decision, (seed, tid, epochs[tid])
            if decision == "STOP":
                stopped[tid] = epochs[tid]
                ray_asha.on_trial_complete(None, _T(tid), result)
        assert min(stopped.values()) < max_t  # streams where ASHA did stop trials


def test_budgeted_asha_promotes_at_most_its_share_then_only_new_leaders():
    """16 trials, rungs 1 and 4 (rf 4): rung 1 may promote ceil(1.5 x 16 / 4) = 6 trials. Rising scores
    would all pass Ray's rule; past the budget only a score above every recorded one goes on."""
    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1, reduction_factor=4,
                        num_samples=16, budget=1.5)
    rising = [asha.decide(f"t{i}", 1, 0.1 + 0.01 * i) for i in range(10)]
    assert rising == ["CONTINUE"] * 6 + ["CONTINUE"] * 4  # each a new leader: still promoted
    assert asha.decide("t10", 1, 0.185) == "STOP"  # top quarter by Ray's rule, but the budget is spent
    assert asha.decide("t11", 1, 0.5) == "CONTINUE"  # a new leader always goes on
    assert asha.decide("t0", 4, 0.3) == "CONTINUE" and asha.decide("t0", 8, 0.3) == "STOP"  # max_t ends it
    within = BudgetedASHA(time_attr="epoch", metric="cmap", mode="min", max_t=8, grace_period=1,
                          reduction_factor=4, num_samples=16, budget=1.5)
    assert [within.decide(f"t{i}", 1, 1.0 - 0.01 * i) for i in range(7)][-1] == "CONTINUE"  # mode min: lower wins
    assert within.decide("t7", 1, 0.945) == "STOP"


def test_the_factory_makes_asha_or_fifo_and_refuses_unknown_names():
    from ray.tune.schedulers import FIFOScheduler

    from search.scheduler import ResumableASHA

    asha = make_scheduler("asha", max_t=8, grace_period=1, reduction_factor=4, num_samples=16)
    assert isinstance(asha, ResumableASHA) and asha._rungs == [1, 4]
    assert type(make_scheduler("none", max_t=8, grace_period=1, reduction_factor=4)) is FIFOScheduler
    with pytest.raises(ValueError, match="unknown scheduler 'pbt'"):
        make_scheduler("pbt", max_t=3, grace_period=1, reduction_factor=2)


def test_a_compute_budget_without_promotions_promotes_the_share_of_the_trials_recorded_so_far():
    """No number of trials and promote=False: rung 1 promotes at most ceil(2.5 x (n + 1) / 4) of the n + 1
    trials recorded there, then only new leaders; with 16 trials its cap would be 10."""
    scores = [0.5, 0.6, 0.55, 0.7, 0.69, 0.695]

    def decisions(num_samples):
        asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1,
                            reduction_factor=4, num_samples=num_samples, promote=False)
        return asha, [asha.decide(f"t{i}", 1, s) for i, s in enumerate(scores)]

    open_ended, seen = decisions(None)
    # t2 is below Ray's cutoff; t5 passes it (0.695 >= the 75th percentile 0.69) but 4 of 6 are promoted
    # already and it does not lead
    assert seen == ["CONTINUE", "CONTINUE", "STOP", "CONTINUE", "CONTINUE", "STOP"]
    assert open_ended.decide("t6", 1, 0.71) == "CONTINUE"  # a new leader always goes on
    assert decisions(16)[1][-1] == "CONTINUE"  # within the cap of a 16-trial search


def test_a_compute_budget_pauses_trials_and_promotes_the_best_quarter_of_each_rung_highest_rung_first():
    """No number of trials (--time-budget / --epoch-budget): ASHA's promotion rule. A trial at a rung goes on
    only while it ranks among the best floor(n / 4) of the n recorded there and was not promoted before; the
    others pause, and a paused trial is promoted once it ranks so, from the highest rung first."""
    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=16, grace_period=1,
                        reduction_factor=4, num_samples=None)
    assert asha.promote and asha._rungs == [1, 4]
    assert [asha.decide(f"t{i}", 1, v) for i, v in enumerate([0.5, 0.6, 0.55])] == ["STOP"] * 3  # 3 // 4 = 0
    assert asha.choose_promotion() is None
    assert asha.decide("t3", 1, 0.4) == "STOP"  # 4 recorded: the best one (t1) may go on, not t3
    assert asha.choose_promotion() == "t1" and asha.choose_promotion() is None  # promoted once only
    assert asha.decide("t1", 2, 0.61) == "CONTINUE"  # between rungs: goes on
    assert asha.decide("t1", 4, 0.7) == "STOP"  # alone at rung 4: paused there
    assert asha.decide("t4", 1, 0.3) == "STOP"
    assert asha.decide("t5", 1, 0.3) == "STOP"
    assert asha.decide("t6", 1, 0.3) == "STOP"
    assert asha.decide("t7", 1, 0.9) == "CONTINUE"  # 8 recorded, best 2: t7 and t1 (promoted): t7 goes on
    for i, v in enumerate([0.1, 0.1, 0.1], start=8):
        asha.decide(f"t{i}", 1, v)
    assert asha.decide("t7", 4, 0.65) == "STOP" and asha.choose_promotion() is None  # rung 4: 2 // 4 = 0
    asha.decide("t2", 1, 0.55)  # (already recorded: nothing changes)
    for i in range(11, 13):
        asha.decide(f"t{i}", 1, 0.2)
    # rung 1 holds 12 (best 3: t7, t1, t2) and rung 4 holds 2: t2 goes on; t0 (0.5) ranks 4th
    assert asha.choose_promotion(lambda tid: False if tid == "t2" else True) is None  # t2 cannot go on (no checkpoint)
    assert asha.choose_promotion() is None  # and is never a candidate again
    assert asha.decide("t13", 4, 0.8) == "STOP"  # rung 4's 3rd: it leads there, but 3 // 4 = 0
    assert asha.decide("t14", 4, 0.5) == "STOP"  # the 4th: now 4 // 4 = 1
    assert asha.choose_promotion() == "t13"  # the highest rung's best goes on
    assert asha.decide("t13", 16, 0.85) == "STOP"  # max_t ends it
    low = BudgetedASHA(time_attr="epoch", metric="loss", mode="min", max_t=16, grace_period=1, reduction_factor=2)
    assert [low.decide(f"t{i}", 1, v) for i, v in enumerate([0.5, 0.4])] == ["STOP", "CONTINUE"]  # mode min


def test_a_promoted_trial_goes_to_ray_on_a_free_worker_and_its_epochs_count_as_owed_by_the_budget():
    """choose_trial_to_run hands Ray the paused trial it promotes (ended, with a checkpoint) before a pending
    new one, only while a worker is free; a promoted trial with no checkpoint is skipped for good. The meter
    holds the promoted trial's epoch until Ray ends it again, for the searcher's budget check."""
    from search.budget import Budget, Meter

    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=16, grace_period=1,
                        reduction_factor=2, workers=1)
    meter = Meter(Budget(epochs=100))
    asha.use_budget(meter)

    # rf 2: t0 pauses alone; then 2 // 2 = 1: t0 is the best, so t1, t2 pause; 4 // 2 = 2: t3 pauses too
    for tid, v in (("t0", 0.9), ("t1", 0.8), ("t2", 0.7), ("t3", 0.6)):
        assert asha.on_trial_result(None, _T(tid), {"epoch": 1, "cmap": v}) == "STOP"
    trials = [Trial("t0", "TERMINATED", None), Trial("t1", "TERMINATED", "c"), Trial("t2", "TERMINATED", "c"),
              Trial("t3", "TERMINATED", "c"), Trial("t4", "RUNNING", "c"), Trial("t5", "PENDING", None)]
    # the one worker is busy (t4 runs): no promotion; Ray's FIFO choice, the pending trial, queues for it
    assert asha.choose_trial_to_run(Controller(trials)).trial_id == "t5" and meter.continuing == {}
    trials[4].status = "TERMINATED"
    # t0 is promotable but has nothing to go on from: skipped for good; t1 goes before the pending t5
    chosen = asha.choose_trial_to_run(Controller(trials))
    assert chosen.trial_id == "t1" and "t0" not in asha._resumable and meter.continuing == {"t1": 1}
    chosen.status = "PENDING"  # Ray stages it: the worker counts as taken, and t2, t3 stay paused
    again = asha.choose_trial_to_run(Controller(trials))
    assert again.status == "PENDING" and meter.continuing == {"t1": 1}  # FIFO's pick among the pending ones
    chosen.status = "RUNNING"
    assert asha.on_trial_result(None, _T("t1"), {"epoch": 2, "cmap": 0.8}) == "STOP"  # alone at rung 2: paused
    assert meter.continuing == {"t1": 2}  # until Ray ends it
    chosen.status = "TERMINATED"
    asha.on_trial_complete(None, _T("t1"), {})
    assert meter.continuing == {}
    assert asha.choose_trial_to_run(Controller(trials)).trial_id == "t5"  # nothing promotable: FIFO's pick


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _tail_search():
    """ASHA on 16 epochs (rungs 1, 2, 4, 8) of 4 trials on 3 workers with the tail fill, a scripted clock and
    1 s epochs unless said: t0 leads; t1 is stopped at rung 1 (0.8), t2 at rung 2 (0.6, a lower score but a
    higher rung), t3 at rung 1 with 10 s epochs. Returns (asha, clock, result(trial, epoch, cmap, seconds))."""
    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=16, grace_period=1, reduction_factor=2,
                        num_samples=4, workers=3)
    clock = _Clock()
    asha.tail.clock = clock

    def result(tid, epoch, cmap, seconds=1.0, at=None):
        clock.t = epoch if at is None else at
        return asha.on_trial_result(None, _T(tid), {"epoch": epoch, "cmap": cmap, "time_this_iter_s": seconds})

    return asha, clock, result


def test_the_tail_fill_waits_for_every_trial_then_continues_the_furthest_stopped_trial_that_fits():
    asha, clock, result = _tail_search()
    asha.on_trial_add(None, _T("t0"))
    asha.on_trial_add(None, _T("t1"))
    assert result("t0", 1, 0.9) == "CONTINUE" and result("t1", 1, 0.8) == "STOP"
    assert asha.tail.choose(busy=1) is None  # 2 of the 4 trials have started: no tail yet
    asha.on_trial_add(None, _T("t2"))
    assert result("t0", 2, 0.9) == "CONTINUE" and result("t2", 1, 0.95, at=2) == "CONTINUE"
    assert result("t0", 3, 0.9) == "CONTINUE" and result("t2", 2, 0.6, at=3) == "STOP"
    asha.on_trial_add(None, _T("t3"))
    assert result("t3", 1, 0.2, seconds=10.0, at=3.5) == "STOP"
    assert result("t0", 4, 0.9) == "CONTINUE"  # t0 passes rung 4: it runs at least to rung 8, 4 s from now
    recorded = {r: dict(v) for r, v in asha._recorded.items()}
    # until a restart is measured it is taken to cost what the trials took to start (0 s here), and before any
    # start-up, one epoch (1 s); t2 (rung 2) goes first
    assert asha.tail.end(clock()) == 8 and asha.tail.startups == [0.0, 0.0, 0.0, 0.0]
    asha.tail.startups = []
    assert asha.tail.restart_s == 1.0
    asha.tail.startups = [0.0]
    assert asha.tail.choose(busy=1) == "t2" and asha.tail.choose(busy=2) == "t1"
    assert asha.tail.choose(busy=3) is None  # no worker free
    assert asha.tail.choose(busy=2) is None  # t3's 10 s epoch does not fit before t0 reaches rung 8
    # continued trials go on while their next epoch fits before the end (t0's rung 8, then max_t once it passes)
    assert result("t2", 3, 0.61, at=6) == "CONTINUE"  # 6 + 1 <= 8; its restart took 6 - 4 - 1 = 1 s
    assert result("t1", 2, 0.81, at=6.5) == "CONTINUE"  # 7.5 <= 8
    assert result("t0", 7, 0.9) == "CONTINUE"
    assert result("t1", 3, 0.82, at=7.2) == "STOP"  # 8.2 > 8: it would end after t0's committed end
    assert result("t0", 8, 0.9) == "CONTINUE"  # past rung 8: the end moves to 8 + 8 = 16
    assert asha.tail.end(clock()) == 16
    assert result("t2", 4, 0.62, at=8.5) == "CONTINUE" and asha.tail.continued == 2
    assert asha.tail.choose(busy=2) == "t1"  # stopped again, and fits again now
    # the rungs never see the continued epochs (--resume rebuilds them from the journal as they were)
    assert {r: dict(v) for r, v in asha._recorded.items()} == {**recorded, 8: {"t0": 0.9}}
    assert result("t0", 16, 0.9) == "STOP"  # max_t: nothing of the search's own runs now
    assert result("t2", 5, 0.63, at=16.2) == "STOP" and asha.tail.end(clock()) == -float("inf")
    assert asha.tail.choose(busy=1) is None


def test_the_tail_fill_hands_ray_a_stopped_trial_with_a_checkpoint_and_skips_one_without():
    asha, clock, result = _tail_search()
    for tid in ("t0", "t1", "t2", "t3"):
        asha.on_trial_add(None, _T(tid))
    result("t0", 1, 0.9)
    result("t1", 1, 0.8, at=1.1)
    result("t2", 1, 0.3, at=1.2)
    result("t3", 1, 0.2, at=1.3)
    result("t0", 2, 0.9)

    trials = [Trial("t0", "RUNNING", "c"), Trial("t1", "TERMINATED", None), Trial("t2", "TERMINATED", "c"),
              Trial("t3", "TERMINATED", "c")]
    assert asha.choose_trial_to_run(Controller(trials)) is None  # t1 goes first, but has nothing to go on from
    assert "t1" in asha.tail.done
    assert asha.choose_trial_to_run(Controller(trials)).trial_id == "t2"
    trials[2].status = "PENDING"  # Ray starts it
    assert asha.choose_trial_to_run(Controller(trials)).trial_id == "t2"  # FIFO's pick: a pending trial first
    trials[2].status = "RUNNING"
    assert asha.choose_trial_to_run(Controller(trials)).trial_id == "t3"  # the third worker
    trials[3].status = "RUNNING"
    assert asha.choose_trial_to_run(Controller(trials)) is None  # every worker busy


def test_the_tail_fill_is_on_with_its_flag_or_from_8_trials_at_once():
    from search.scheduler import tail_workers

    assert tail_workers("auto", 7) is None and tail_workers("auto", 8) == 8 and tail_workers("on", 2) == 2
    assert tail_workers("off", 256) is None and tail_workers("on", None) is None
    assert make_scheduler("asha", max_t=8, grace_period=1, reduction_factor=4, num_samples=16, workers=8).tail
    assert make_scheduler("asha", max_t=8, grace_period=1, reduction_factor=4, workers=8).tail is None  # no count
    with pytest.raises(ValueError, match="unknown --tail-fill 'sometimes'; choose auto, on, off"):
        tail_workers("sometimes", 4)


def test_a_resumed_search_has_the_trials_its_journal_says_were_stopped_as_tail_fill_candidates(tmp_path):
    import json

    from search.scheduler import ResumableASHA

    lines = [{"event": "result", "trial_id": tid, "epoch": e, "cmap": v, "status": status, "done": False,
              "row": {"time_this_iter_s": 2.0}}
             for tid, e, v, status in [("a", 1, 0.9, None), ("b", 1, 0.5, None), ("a", 2, 0.9, None),
                                       ("c", 1, 0.0, "diverged"), ("a", 8, 0.95, None)]]
    (tmp_path / "results_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    asha = ResumableASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1, reduction_factor=2,
                         num_samples=4, workers=2, journal=str(tmp_path / "results_log.jsonl"))
    asha.on_trial_add(None, _T("d"))  # the first call rebuilds the rungs and the tail's records
    assert asha.tail.candidates == {"b"}  # a reached max_t, c diverged
    assert asha.tail.epoch_s("b") == 2.0 and asha.tail.running == {"d"}


def test_a_resumed_budget_search_rebuilds_its_paused_and_promoted_trials_from_the_journal(tmp_path):
    """Promote mode on --resume: a trial whose journal goes on past the rung it paused at was promoted there
    (it is not promoted again); the trials still paused are candidates, a diverged one is not; then the
    rebuilt rungs promote as the uninterrupted search would have."""
    import json

    from search.scheduler import ResumableASHA

    journal = tmp_path / "results_log.jsonl"
    rows = [("a", 1, 0.9, None), ("b", 1, 0.5, None), ("c", 1, 0.7, None), ("a", 2, 0.91, None),
            ("d", 1, 0.95, "diverged")]
    journal.write_text("".join(json.dumps({"event": "result", "trial_id": tid, "epoch": e, "cmap": v, "status": s,
                                           "done": False}) + "\n" for tid, e, v, s in rows))
    asha = ResumableASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1, reduction_factor=2,
                         journal=str(journal))
    asha.on_trial_add(None, _T("e"))  # the first call rebuilds the rungs from the journal
    assert asha.promote and asha._promoted_ids[1] == {"a"} and asha._recorded[2] == {"a": 0.91}
    # a went on from rung 1 and paused at rung 2; d diverged (its score a placeholder, ranked last)
    assert asha._resumable == {"a": 2, "b": 1, "c": 1}
    # rung 1 holds a, b, c, d: the best 2 are a (promoted) and c: c is promotable now
    assert asha.choose_promotion() == "c" and asha.choose_promotion() is None
    assert asha.on_trial_result(None, _T("e"), {"epoch": 1, "cmap": 0.1}) == "STOP"
    # 6 recorded, best 3: a, c (promoted) and f (0.6 > b's 0.5): f goes straight on; b stays paused
    assert asha.on_trial_result(None, _T("f"), {"epoch": 1, "cmap": 0.6}) == "CONTINUE"
    assert asha.choose_promotion() is None


def test_a_scheduler_saved_before_promote_mode_is_restored_stopping_trials_as_then():
    import pickle

    asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1, reduction_factor=4,
                        num_samples=None, promote=False)
    state = dict(asha.__dict__)
    for key in ("promote", "_workers", "_promoted_ids", "_resumable", "continuing"):
        del state[key]  # what a search saved by an earlier birdtune holds
    old = BudgetedASHA.__new__(BudgetedASHA)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.promote is False and restored.decide("t0", 1, 0.5) == "CONTINUE"  # the first goes on
    assert restored.choose_promotion() is None and restored.continuing == {}
