"""core.losses: all four take hard and soft (mixup) targets; equal to pytorch-toolbelt on hard labels."""
import pytest
import torch
import torch.nn.functional as F
from pytorch_toolbelt import losses as L

from core.losses import build_loss

NAMES = ["ce", "soft_ce", "focal_cosine", "bi_tempered"]


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g, requires_grad=True)
    hard = torch.randint(0, 5, (8,), generator=g)
    partner = (hard + 1 + torch.randint(0, 4, (8,), generator=g)) % 5
    w = torch.rand(8, 1, generator=g)
    soft = F.one_hot(hard, 5) * w + F.one_hot(partner, 5) * (1 - w)
    return logits, hard, soft


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_accepts_hard_and_soft_targets(name, batch):
    logits, hard, soft = batch
    loss = build_loss(name, 0.25)
    for target in (hard, soft):
        value = loss(logits, target)
        assert value.shape == () and torch.isfinite(value) and value > 0
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a one-hot soft target is the hard label
    assert torch.allclose(loss(logits, F.one_hot(hard, 5).float()), loss(logits, hard), atol=1e-6)


def test_soft_ce_equals_toolbelt_on_hard_labels(batch):
    logits, hard, _ = batch
    ours = build_loss("soft_ce", 0.25)(logits, hard)
    assert torch.allclose(ours, L.SoftCrossEntropyLoss(smooth_factor=0.25)(logits, hard), atol=1e-6)


def test_focal_cosine_equals_toolbelt_on_hard_labels(batch):
    logits, hard, _ = batch
    assert torch.allclose(build_loss("focal_cosine", 0.0)(logits, hard), L.FocalCosineLoss()(logits, hard), atol=1e-6)


def test_bi_tempered_equals_toolbelt(batch):
    logits, hard, soft = batch
    ref = L.BiTemperedLogisticLoss(t1=0.8, t2=1.2, smoothing=0.1)
    assert torch.allclose(build_loss("bi_tempered", 0.1)(logits, soft), ref(logits, soft), atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "soft_ce"])
def test_cross_entropies_are_linear_in_the_mixup_target(name, batch):
    logits, hard, _ = batch
    loss = build_loss(name, 0.25)
    other = (hard + 2) % 5
    w = 0.3
    mixed = loss(logits, F.one_hot(hard, 5) * w + F.one_hot(other, 5) * (1 - w))
    assert torch.allclose(mixed, w * loss(logits, hard) + (1 - w) * loss(logits, other), atol=1e-6)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        build_loss("mse")
