"""birdtune's ASHA (search.scheduler) on scripted result streams: Ray's rule exactly without a budget, the
promotion budget, the factory."""
import pytest

from search.scheduler import BudgetedASHA, make_scheduler


class _T:
    def __init__(self, trial_id):
        self.trial_id, self.config, self.status = trial_id, {}, "RUNNING"


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


def test_a_compute_budget_promotes_the_share_of_the_trials_recorded_so_far():
    """No number of trials (--time-budget / --epoch-budget): rung 1 promotes at most ceil(2.5 x (n + 1) / 4)
    of the n + 1 trials recorded there, then only new leaders; with 16 trials its cap would be 10."""
    scores = [0.5, 0.6, 0.55, 0.7, 0.69, 0.695]

    def decisions(num_samples):
        asha = BudgetedASHA(time_attr="epoch", metric="cmap", mode="max", max_t=8, grace_period=1,
                            reduction_factor=4, num_samples=num_samples)
        return asha, [asha.decide(f"t{i}", 1, s) for i, s in enumerate(scores)]

    open_ended, seen = decisions(None)
    # t2 is below Ray's cutoff; t5 passes it (0.695 >= the 75th percentile 0.69) but 4 of 6 are promoted
    # already and it does not lead
    assert seen == ["CONTINUE", "CONTINUE", "STOP", "CONTINUE", "CONTINUE", "STOP"]
    assert open_ended.decide("t6", 1, 0.71) == "CONTINUE"  # a new leader always goes on
    assert decisions(16)[1][-1] == "CONTINUE"  # within the cap of a 16-trial search
