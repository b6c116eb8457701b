"""core.engine.fit: metrics per epoch, files, exact resume, divergence, accumulation, schedules."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from core import checkpoint, engine
from core.config import ConfigError
from core.data import load_data
from core.metrics import cmap_present
from helpers import stop_after

KEYS = {"epoch", "train_loss", "val_loss", "cmap", "cmap_present", "accuracy", "mean_recall", "lr",
        "images_per_s", "status", "best_cmap"}


def test_fit_learns_the_tiny_demo_and_writes_its_files(tiny_cfg, tiny_data):
    cfg = tiny_cfg.replace(epochs=8, lr=1e-2, mixup_p=0.5)
    reports = []
    summary = engine.fit(cfg, lambda m, d: reports.append((m, d)), data=tiny_data)
    assert summary["status"] == "ok" and summary["epochs_run"] == 8 and len(reports) == 8
    for k, (m, d) in enumerate(reports, 1):
        assert set(m) == KEYS and m["epoch"] == k and m["status"] == "ok" and d == cfg.out_dir
        assert all(math.isfinite(m[key]) for key in KEYS - {"status"})
    # chance: the same metrics for random predictions on the same validation labels
    val = tiny_data.table[tiny_data.table.fold == cfg.fold]
    rng = np.random.default_rng(0)
    chance = [cmap_present(rng.dirichlet(np.ones(tiny_data.num_classes), len(val)), val.label.to_numpy())
              for _ in range(20)]
    best = max(m["cmap_present"] for m, _ in reports)
    assert best > max(chance) + 0.2, (best, max(chance))
    out = summary["out_dir"]
    metrics = pd.read_csv(f"{out}/metrics.csv")
    assert metrics["epoch"].tolist() == list(range(1, 9))
    assert metrics["cmap"].max() == pytest.approx(summary["best_cmap"])
    best_ckpt = checkpoint.load(f"{out}/best.pt")
    assert best_ckpt["epoch"] == summary["best_epoch"] and best_ckpt["metrics"]["cmap"] == summary["best_cmap"]
    from core.config import TrainConfig
    assert TrainConfig.load(f"{out}/config.yaml") == cfg


def test_resume_continues_exactly(tiny_cfg, tiny_data, tmp_path):
    cfg = tiny_cfg.replace(epochs=3, lr_schedule="cosine", warmup_epochs=0.5)
    straight = engine.fit(cfg.replace(out_dir=str(tmp_path / "a")), data=tiny_data)
    # a run of the same config killed after epoch 1, then resumed into another folder
    part = engine.fit(cfg.replace(out_dir=str(tmp_path / "c")), data=tiny_data,
                      resume_from=stop_after(cfg, tiny_data, tmp_path / "d", epochs_done=1))
    a = checkpoint.load(tmp_path / "a" / "last.pt")
    c = checkpoint.load(tmp_path / "c" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], c["model"][k]), k
    assert [h["cmap"] for h in straight["history"]] == [h["cmap"] for h in part["history"]]
    assert part["epochs_run"] == 3 and a["optimizer"]["state"].keys() == c["optimizer"]["state"].keys()


def test_resume_after_the_last_epoch_changes_nothing(tiny_cfg, tiny_data):
    first = engine.fit(tiny_cfg.replace(epochs=1), data=tiny_data)
    before = checkpoint.load(f"{first['out_dir']}/last.pt")["model"]
    again = engine.fit(tiny_cfg.replace(epochs=1), data=tiny_data, resume_from=first["out_dir"])
    after = checkpoint.load(f"{first['out_dir']}/last.pt")["model"]
    assert again["epochs_run"] == 1 and all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_loss_ends_with_status_diverged(tiny_cfg, tiny_data):
    def nan_loss(name, smoothing):  # fit takes its loss factory as an argument
        inner = engine.build_loss(name, smoothing)
        return lambda logits, y: inner(logits, y) * float("nan")

    reports = []
    summary = engine.fit(tiny_cfg.replace(epochs=3), lambda m, d: reports.append((m, d)), data=tiny_data,
                         loss_factory=nan_loss)
    assert summary["status"] == "diverged" and summary["epochs_run"] == 1
    (m, d), = reports
    assert m["status"] == "diverged" and m["cmap"] == 0.0 and d is None
    assert pd.read_csv(f"{summary['out_dir']}/metrics.csv")["status"].tolist() == ["diverged"]


def test_gradient_accumulation_steps_the_last_partial_group(tiny_cfg, tiny_data):
    cfg = tiny_cfg.replace(epochs=1, batch_size=8, grad_accum=3, class_cap=0, class_floor=0, mixup_p=0.0)
    summary = engine.fit(cfg, data=tiny_data)
    n_train = int((tiny_data.table.fold != cfg.fold).sum())
    batches = math.ceil(n_train / 8) - (n_train % 8 == 1)
    state = checkpoint.load(f"{summary['out_dir']}/last.pt")
    assert state["scheduler"]["last_epoch"] == math.ceil(batches / 3)
    steps = {s["step"].item() for s in state["optimizer"]["state"].values()}
    assert steps == {math.ceil(batches / 3)}


def test_lr_schedules():
    f = engine.lr_lambda("cosine", warmup_steps=4, total_steps=20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(12) == pytest.approx(0.5) and f(20) == pytest.approx(0.0)
    assert engine.lr_lambda("none", 0, 10)(7) == 1.0


def test_amp_modes_per_device(tiny_cfg):
    assert engine.amp_dtype("fp16", torch.device("cpu")) == torch.float16  # tests/test_amp.py runs it
    assert engine.amp_dtype("auto", torch.device("cpu")) is None
    assert engine.amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_bf16_autocast_on_cpu_trains(tiny_cfg, tiny_data):
    summary = engine.fit(tiny_cfg.replace(epochs=1, amp="bf16"), data=tiny_data)
    assert summary["status"] == "ok" and math.isfinite(summary["history"][0]["train_loss"])


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_switches_the_activation_layout(tiny_cfg, tiny_data, monkeypatch, channels_last):
    seen = []
    real = engine.build_model

    def recording(*a, **kw):
        model = real(*a, **kw)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first.register_forward_hook(lambda mod, inp, out: seen.append(
            (out.is_contiguous(memory_format=torch.channels_last), out.is_contiguous())))
        return model

    monkeypatch.setattr(engine, "build_model", recording)
    summary = engine.fit(tiny_cfg.replace(epochs=1, channels_last=channels_last), data=tiny_data)
    assert summary["status"] == "ok" and seen
    # training and validation batches alike: NHWC when on, plain NCHW when off
    assert all(nhwc == channels_last and nchw == (not channels_last) for nhwc, nchw in seen), seen[:3]


def test_shared_data_must_match_the_config(tiny_cfg, tiny_data):
    with pytest.raises(ConfigError, match="decoded at"):
        engine.fit(tiny_cfg.replace(img_size=48), data=tiny_data)
    with pytest.raises(ConfigError, match="num_classes=2 but the CSV has labels up to"):
        engine.fit(tiny_cfg.replace(num_classes=2), data=tiny_data)


@pytest.mark.gpu
def test_cuda_fp16_amp_step_and_resume(tiny_cfg, tiny_data, tmp_path):
    cfg = tiny_cfg.replace(epochs=2, device="cuda", amp="fp16", num_workers=2)
    summary = engine.fit(cfg, data=tiny_data)
    assert summary["status"] == "ok"
    state = checkpoint.load(f"{summary['out_dir']}/last.pt")
    assert state["scaler"]["scale"] > 0  # GradScaler stepped outside autocast and kept a finite scale
    again = engine.fit(cfg.replace(epochs=3), data=tiny_data, resume_from=summary["out_dir"])
    assert again["epochs_run"] == 3


def test_without_a_cache_above_the_memory_limit_images_are_read_from_disk_with_the_same_result(
        tiny_cfg, tiny_data, tmp_path):
    from core.data import LazyImages

    assert tiny_data.how in ("built", "reused") and tiny_data.nbytes == 0  # mapped from the cache file
    # 1 kB: far below the tiny set
    lazy = load_data(tiny_cfg.csv, tiny_cfg.img_size, memory_limit_gb=1e-6, image_cache="off")
    assert isinstance(lazy.images, LazyImages) and lazy.nbytes == 0 and lazy.images.shape == tiny_data.images.shape
    np.testing.assert_array_equal(lazy.images[[5, 0, 5]], tiny_data.images[[5, 0, 5]])
    np.testing.assert_array_equal(lazy.images[np.int64(3)], tiny_data.images[3])
    eager = load_data(tiny_cfg.csv, tiny_cfg.img_size, memory_limit_gb=1.0, image_cache="off")
    assert eager.how == "memory" and eager.nbytes == tiny_data.images.nbytes == eager.data_bytes
    np.testing.assert_array_equal(eager.images, tiny_data.images)  # the cache holds exactly what decoding gives
    a = engine.fit(tiny_cfg.replace(epochs=1, out_dir=str(tmp_path / "a")), None, data=tiny_data)
    b = engine.fit(tiny_cfg.replace(epochs=1, out_dir=str(tmp_path / "b")), None, data=lazy)
    assert a["history"][0]["cmap"] == b["history"][0]["cmap"]
    assert a["history"][0]["train_loss"] == pytest.approx(b["history"][0]["train_loss"], rel=1e-6)


@pytest.mark.gpu
def test_cuda_compiled_model_trains_and_checkpoints_plain_weights(tiny_cfg, tiny_data, tmp_path):
    cfg = tiny_cfg.replace(device="cuda", compile=True, epochs=1, out_dir=str(tmp_path / "c"))
    summary = engine.fit(cfg, None, data=tiny_data)
    assert summary["status"] == "ok" and math.isfinite(summary["history"][0]["train_loss"])
    state = checkpoint.load(tmp_path / "c" / "last.pt")
    assert not any(k.startswith("_orig_mod.") for k in state["model"])  # loadable without torch.compile
