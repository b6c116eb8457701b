"""spaces: registry, define-by-run functions, warm-start points inside the bounds, shared constants."""
import dataclasses

import optuna
import pytest

import spaces
from core.config import TrainConfig


def test_registry_and_unknown_names():
    assert set(spaces.SPACES) == {"finetune", "scratch", "smoke"}
    with pytest.raises(spaces.UnknownSpace, match="unknown space 'tune'; valid spaces: finetune, scratch, smoke"):
        spaces.get("tune")
    assert (spaces.METRIC, spaces.MODE, spaces.TIME_ATTR) == ("cmap", "max", "epoch")


@pytest.mark.parametrize("name", sorted(spaces.SPACES))
def test_searched_names_are_config_fields_and_points_are_valid_first_trials(name):
    space = spaces.get(name)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(space.searched()) <= fields and set(space.base) <= fields
    assert space.grace_period <= space.epochs and space.on_demo().grace_period <= space.on_demo().epochs
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for point in space.points:
        study.enqueue_trial(point)
        trial = study.ask()
        space.define(trial)
        # Optuna gives back an enqueued value only if it lies inside the distribution (inclusive bounds)
        assert trial.params == point
        TrainConfig.from_dict({**space.base, **point})


def test_finetune_space_matches_the_notebook():
    space = spaces.get("finetune")
    assert space.points[0] == dict(lr=3e-5, weight_decay=3e-4, drop_rate=0.3, drop_path_rate=0.2,
                                   label_smoothing=0.25, class_cap=500, class_floor=50)
    study = optuna.create_study()
    trial = study.ask()
    space.define(trial)
    d = trial.distributions
    assert (d["lr"].low, d["lr"].high, d["lr"].log) == (1e-5, 3e-4, True)
    assert (d["class_cap"].low, d["class_cap"].high, d["class_floor"].low, d["class_floor"].high) == (100, 1000, 10, 100)
    assert "mixup_p" in spaces.get("scratch").searched() and "mixup_p" not in space.searched()
