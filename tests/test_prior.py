"""search.prior: configs drawn near a known one, through Optuna's define-by-run (bounds, steps, log scales,
categorical and conditional parameters), and how the multi-fidelity TPE mixes them in."""
import math

import numpy as np
import optuna
import pytest

import spaces
from search.prior import AroundSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def define(trial):
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    trial.suggest_float("drop", 0.0, 0.5, step=0.05)
    trial.suggest_int("batch", 16, 512, log=True)
    opt = trial.suggest_categorical("opt", ["adamw", "sgd", "lion"])
    if opt == "sgd":
        trial.suggest_float("momentum", 0.5, 0.99)


CENTER = dict(lr=1e-3, drop=0.2, batch=64, opt="adamw")


def draws(center, width, n=600, seed=0):
    study = optuna.create_study(sampler=AroundSampler(center, width, seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        define(t)
        out.append(dict(t.params))
    return out


def test_draws_are_valid_configs_of_the_space_centred_on_the_given_one():
    got = draws(CENTER, 0.1)
    lr = np.log10([c["lr"] for c in got])
    assert ((-5 <= lr) & (lr <= -1)).all() and abs(np.median(lr) - (-3)) < 0.1
    assert np.std(lr) == pytest.approx(0.1 * 4, rel=0.15)  # width x the range, on the log scale
    drops = [c["drop"] for c in got]
    assert all(0 <= d <= 0.5 and abs(d / 0.05 - round(d / 0.05)) < 1e-9 for d in drops)
    assert abs(np.median(drops) - 0.2) < 0.03
    batch = [c["batch"] for c in got]
    assert all(isinstance(b, int) and 16 <= b <= 512 for b in batch)
    assert 48 <= np.median(batch) <= 86
    kept = sum(c["opt"] == "adamw" for c in got) / len(got)
    assert 0.6 < kept < 0.74  # kept with probability 1/2, else one of the three uniformly: 2/3
    sgd = [c["momentum"] for c in got if c["opt"] == "sgd"]  # not in the center: uniform over its range
    assert len(sgd) > 50 and all(0.5 <= m <= 0.99 for m in sgd) and np.std(sgd) > 0.1
    assert draws(CENTER, 0.1) == got  # a seed gives the same draws


def test_a_wide_draw_covers_the_range_and_a_center_at_a_bound_stays_inside():
    wide = np.log10([c["lr"] for c in draws(CENTER, 2.0)])
    assert wide.min() < -4.5 and wide.max() > -1.5
    edge = draws(dict(CENTER, lr=1e-1, drop=0.0), 0.05, n=200)
    assert all(c["lr"] <= 1e-1 for c in edge) and all(c["drop"] >= 0 for c in edge)
    assert np.median([c["lr"] for c in edge]) > 0.05


def test_a_bad_width_or_a_center_outside_the_space_is_handled():
    with pytest.raises(ValueError, match="width must be > 0"):
        AroundSampler(CENTER, 0.0)
    got = draws(dict(CENTER, lr=5.0, opt="rmsprop"), 0.1, n=300)  # outside: drawn as if unknown (uniform)
    assert np.std(np.log10([c["lr"] for c in got])) > 0.8
    assert {c["opt"] for c in got} == {"adamw", "sgd", "lion"}


def mftpe(tmp_path, **kw):
    from search.searcher import MultiFidelityTPE

    smoke = spaces.get("smoke")
    tmp_path.mkdir()
    return MultiFidelityTPE(rungs=[1, 2, 3], min_points=4, seed=0, space=smoke.define, metric="cmap", mode="max",
                            max_t=3, study_name="s", db_path=str(tmp_path / "optuna.db"),
                            points_to_evaluate=[dict(p) for p in smoke.points],
                            sampler=optuna.samplers.RandomSampler(seed=0), **kw)


def spread(configs):
    return float(np.std(np.log10([c["lr"] for c in configs])))


def test_the_multi_fidelity_tpe_draws_near_the_base_config_before_its_model_and_near_the_best_after(tmp_path):
    base = spaces.get("smoke").points[0]
    plain, near = mftpe(tmp_path / "a"), mftpe(tmp_path / "b", prior=1.0, local=1.0, width=0.05)
    first = [s.suggest("t0") for s in (plain, near)]
    assert first[0] == first[1] == base  # the base config itself comes first either way
    before = {id(s): [s.suggest(f"t{i}") for i in range(1, 12)] for s in (plain, near)}
    # log10(lr) spans 1.48 decades: uniform draws spread by ~0.43, draws near the base by 0.05 x 1.48
    assert spread(before[id(plain)]) > 0.25 and spread(before[id(near)]) < 0.15
    assert all(abs(math.log10(c["lr"]) - math.log10(base["lr"])) < 0.3 for c in before[id(near)])
    for s in (plain, near):
        for i in range(4):  # rung 1 now holds min_points scores: the best has the highest lr
            c = base if i == 0 else before[id(s)][i - 1]
            score = math.log10(c["lr"])
            s.on_trial_result(f"t{i}", {"epoch": 1, "cmap": score})
            s.on_trial_complete(f"t{i}", {"epoch": 1, "cmap": score})
    best = max(near._obs[1].values(), key=lambda o: o[1])[0]
    after = [near.suggest(f"n{i}") for i in range(6)]
    assert near._proposed == 0  # none from the model: all near its rung's best
    assert all(abs(math.log10(c["lr"]) - math.log10(best["lr"])) < 0.3 for c in after)
    assert spread(after) < 0.15
    assert plain.suggest("n0") is not None and plain._proposed == 1  # without them the model proposes
