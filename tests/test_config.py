"""TrainConfig: notebook defaults, strict keys and types, YAML round trip, --set parsing."""
import pytest
import yaml

from core.config import ConfigError, TrainConfig, parse_set


def test_defaults_reproduce_the_notebook_cfg():
    c = TrainConfig()
    assert (c.model_name, c.img_size, c.batch_size, c.grad_accum) == ("tf_efficientnet_b0.ns_jft_in1k", 128, 64, 1)
    assert (c.drop_rate, c.drop_path_rate, c.lr, c.weight_decay) == (0.3, 0.2, 3e-4, 3e-4)
    assert (c.label_smoothing, c.class_cap, c.class_floor, c.epochs, c.fold) == (0.25, 500, 50, 30, 0)
    assert (c.mixup_p, c.mixup_alpha, c.loss, c.seed, c.resample_seed) == (1.0, 0.2, "ce", 123, 1)


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


@pytest.mark.parametrize("key,value", [("lr", "fast"), ("epochs", 1.5), ("pretrained", "yes"),
                                       ("model_name", 3), ("batch_size", True), ("drop_rate", None)])
def test_wrong_type_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"^{key} must be"):
        TrainConfig.from_dict({key: value})


@pytest.mark.parametrize("changes,match", [
    ({"lr": 0.0}, "lr must be > 0"), ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\)"),
    ({"class_cap": 10, "class_floor": 50}, "class_cap .* must be >= class_floor"),
    ({"loss": "mse"}, "loss='mse' is not one of"), ({"epochs": 0}, "epochs must be > 0"),
    ({"mixup_p": 1.5}, "mixup_p must be in"), ({"num_classes": 1}, "num_classes must be 0"),
])
def test_out_of_range_values_fail(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(changes)


def test_yaml_round_trip_and_yaml_exponent_strings(tmp_path):
    c = TrainConfig(lr=1e-5, drop_rate=0.1, model_name="resnet18", pretrained=False)
    c.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == c
    # PyYAML reads `3e-4` (no dot) as a string; a user writing it must still get a float
    (tmp_path / "u.yaml").write_text("lr: 3e-4\nepochs: 4\n")
    u = TrainConfig.load(tmp_path / "u.yaml")
    assert u.lr == 3e-4 and isinstance(u.lr, float) and u.epochs == 4
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["lr"] == 1e-5


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        TrainConfig.load(tmp_path / "bad.yaml")
    assert "\n" not in str(e.value)


def test_parse_set_types_values_by_field():
    assert parse_set(["lr=1e-4", "pretrained=false", "epochs=3", "model_name=resnet18"]) == {
        "lr": 1e-4, "pretrained": False, "epochs": 3, "model_name": "resnet18"}
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        parse_set(["lrr=1"])
    with pytest.raises(ConfigError, match="epochs must be int, got 'three'"):
        parse_set(["epochs=three"])
    with pytest.raises(ConfigError, match="expects key=value"):
        parse_set(["lr"])


def test_replace_validates():
    assert TrainConfig().replace(lr=1e-3).lr == 1e-3
    with pytest.raises(ConfigError):
        TrainConfig().replace(lr=-1.0)
