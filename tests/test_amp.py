"""The CUDA path's mixed precision, executed on the CPU: fp16 autocast with torch.amp.GradScaler('cpu') runs
the same code a GPU trial does (loss scaling, skipped steps, the scaler's state in checkpoints), and the
trial's GPU share and CPU default, with CUDA faked where only its presence matters."""
import math

import pytest
import torch

from core import checkpoint, engine
from core.losses import build_loss
from helpers import stop_after


@pytest.fixture
def fp16(tiny_cfg):
    return tiny_cfg.replace(device="cpu", amp="fp16", epochs=1, lr_schedule="cosine", warmup_epochs=0.5)


def test_fp16_on_the_cpu_autocasts_the_forward_and_scales_the_loss(fp16, tiny_data, monkeypatch):
    dtypes = []
    real = engine.build_model

    def recording(*a, **kw):
        model = real(*a, **kw)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        first.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
        return model

    monkeypatch.setattr(engine, "build_model", recording)
    batches = []
    summary = engine.fit(fp16, data=tiny_data, loss_factory=_overflow_on(set(), batches))
    assert summary["status"] == "ok" and math.isfinite(summary["history"][0]["train_loss"])
    assert dtypes and set(dtypes) == {torch.float16}
    state = checkpoint.load(f"{summary['out_dir']}/last.pt")
    steps = state["scheduler"]["last_epoch"]
    skipped = len(batches) - steps  # fp16 gradients overflow at the first scale, 2^16, until it backs off
    assert 0 < steps == state["optimizer"]["state"][0]["step"] and skipped >= 1
    assert state["scaler"]["scale"] == 2.0 ** 16 * 0.5 ** skipped


class _InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward, as an fp16 overflow gives."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def _overflow_on(steps: set[int], calls: list | None = None):
    """A loss factory whose loss gives infinite gradients on the given training steps (1-based; `calls`
    collects one item per training step; validation calls, without gradients, are not counted)."""
    calls = [] if calls is None else calls

    def factory(name, smoothing):
        inner = build_loss(name, smoothing)

        class Loss(torch.nn.Module):
            def forward(self, logits, y):
                if not torch.is_grad_enabled():
                    return inner(logits, y)
                calls.append(1)
                if len(calls) in steps:
                    logits = _InfGrad.apply(logits)
                return inner(logits, y)

        return Loss()

    return factory


def test_a_step_with_inf_gradients_is_skipped_and_does_not_advance_the_lr_schedule(fp16, tiny_data, tmp_path):
    batches = []
    clean = engine.fit(fp16.replace(out_dir=str(tmp_path / "clean")), data=tiny_data,
                       loss_factory=_overflow_on(set(), batches))
    last = len(batches)  # the last step: the scale has settled, so it is finite in the clean run
    hit = engine.fit(fp16.replace(out_dir=str(tmp_path / "hit")), data=tiny_data, loss_factory=_overflow_on({last}))
    a = checkpoint.load(tmp_path / "clean" / "last.pt")
    b = checkpoint.load(tmp_path / "hit" / "last.pt")
    assert hit["status"] == "ok" and math.isfinite(hit["history"][0]["train_loss"])  # the loss itself was finite
    assert b["scaler"]["scale"] == a["scaler"]["scale"] / 2  # backed off once more
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] - 1  # the skipped step did not count
    assert b["optimizer"]["state"][0]["step"] == a["optimizer"]["state"][0]["step"] - 1
    weights = [v for v in b["model"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(v).all() for v in weights)  # the infinite gradients never reached them
    assert hit["history"][0]["lr"] > clean["history"][0]["lr"]  # cosine: one step behind is a higher lr


def test_fp16_resume_restores_the_scaler_and_continues_bit_exactly(fp16, tiny_data, tmp_path):
    cfg = fp16.replace(epochs=2)
    engine.fit(cfg.replace(out_dir=str(tmp_path / "a")), data=tiny_data)
    part = stop_after(cfg, tiny_data, tmp_path / "d", epochs_done=1)
    engine.fit(cfg.replace(out_dir=str(tmp_path / "c")), data=tiny_data, resume_from=part)
    a, c = checkpoint.load(tmp_path / "a" / "last.pt"), checkpoint.load(tmp_path / "c" / "last.pt")
    assert checkpoint.load(part / "last.pt")["scaler"]["scale"] < 2.0 ** 16  # a state worth restoring
    assert a["scaler"] == c["scaler"] and a["scheduler"] == c["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], c["model"][k]), k


@pytest.mark.parametrize("before,after", [("fp16", "off"), ("off", "fp16"), ("bf16", "fp16"), ("fp16", "bf16")])
def test_resume_across_precision_modes(fp16, tiny_data, tmp_path, before, after):
    cfg = fp16.replace(epochs=2)
    part = stop_after(cfg.replace(amp=before), tiny_data, tmp_path / "first", epochs_done=1)
    done = engine.fit(cfg.replace(amp=after, out_dir=str(tmp_path / "second")), data=tiny_data, resume_from=part)
    assert done["status"] == "ok" and done["epochs_run"] == 2 and math.isfinite(done["history"][-1]["train_loss"])
    scaler = checkpoint.load(tmp_path / "second" / "last.pt")["scaler"]
    assert (0 < scaler["scale"] <= 2.0 ** 16) if after == "fp16" else scaler == {}


