"""search.spec: what search.yaml holds, read and written once, ASHA's rungs and the resume command from it."""
import dataclasses

import yaml

from helpers import smoke_spec
from search import spec as spec_mod
from search.budget import Budget
from search.spec import Plan, RunOptions, SearchSpec


def options(tmp_path, **changes) -> RunOptions:
    o = RunOptions(name="e", storage_path=str(tmp_path), storage_arg="./results", address=None, resume=False,
                   max_failures=3, concurrency=None, dashboard=False, dashboard_host="127.0.0.1", verbose=False)
    return dataclasses.replace(o, **changes)


def test_search_yaml_is_written_once_in_its_order_and_read_back_whole(tmp_path):
    spec = smoke_spec(epoch_budget=12, time_budget=90.0, classes=["a", "b"])
    plan = Plan(spec, options(tmp_path), space=None, data=None)
    spec_mod.write(plan)
    text = (tmp_path / "e" / "search.yaml").read_text()
    assert list(yaml.safe_load(text)) == list(SearchSpec.ORDER)
    assert spec_mod.read(str(tmp_path / "e")) == spec
    spec_mod.write(Plan(dataclasses.replace(spec, seed=7), plan.options, None, None))  # never rewritten
    assert spec_mod.read(str(tmp_path / "e")).seed == 0
    assert spec_mod.read(str(tmp_path / "missing")) is None


def test_an_older_search_yaml_reads_with_the_defaults_of_its_time():
    d = smoke_spec().to_dict()
    for key in ("searcher", "scheduler", "revalidate_top", "revalidate_folds", "study"):
        d.pop(key)
    old = SearchSpec.from_dict({**d, "a_key_from_the_future": 1})
    assert (old.searcher, old.scheduler, old.revalidate_top, old.revalidate_folds, old.study) == ("tpe", "asha", 0, [], None)


def test_rungs_are_where_asha_judges_trials():
    assert smoke_spec().rungs == [1, 2]
    assert smoke_spec(max_t=8, reduction_factor=4).rungs == [1, 4]
    assert smoke_spec(max_t=30, grace_period=2, reduction_factor=3).rungs == [2, 6, 18]
    assert smoke_spec(scheduler="none").rungs == []


def test_the_budget_and_the_first_trial_number():
    assert not smoke_spec().budget and smoke_spec(epoch_budget=64).budget == Budget(epochs=64, seconds=None)
    assert smoke_spec().first_trial_number == 1 and smoke_spec(searcher="random").first_trial_number == 0


def test_the_resume_command_is_what_the_user_typed(tmp_path):
    assert options(tmp_path).resume_command == "python -m search.run --name e --resume"
    far = options(tmp_path, storage_arg="s3://b/my runs")
    assert far.resume_command == "python -m search.run --name e --resume --storage-path 's3://b/my runs'"
    assert options(tmp_path).exp == str(tmp_path / "e")
