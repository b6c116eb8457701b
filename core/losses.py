"""The notebook's four losses, each accepting hard (N,) labels or soft (N, C) mixup targets."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():  # pytorch-toolbelt decorates with the deprecated torch.cuda.amp API
    warnings.simplefilter("ignore", FutureWarning)
    from pytorch_toolbelt.losses import BiTemperedLogisticLoss


def _soft(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.dim() == 1:
        return F.one_hot(target.long(), num_classes).float()
    return target.float()


def _smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    """Label smoothing of a probability target: (1 - eps) * t + eps / C."""
    return target * (1.0 - eps) + eps / target.shape[-1] if eps else target


class SoftCrossEntropy(nn.Module):
    """pytorch-toolbelt's SoftCrossEntropyLoss(smooth_factor) in its soft-target form:
    (1 - eps) * -sum(t * log p) + eps / C * -sum(log p); equal to it on hard labels."""

    def __init__(self, smooth_factor: float = 0.0):
        super().__init__()
        self.eps = smooth_factor

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        t = _soft(target, logits.shape[-1])
        nll = -(t * logp).sum(-1)
        smooth = -logp.sum(-1)
        return ((1.0 - self.eps) * nll + self.eps / logits.shape[-1] * smooth).mean()


class FocalCosine(nn.Module):
    """pytorch-toolbelt's FocalCosineLoss(alpha, gamma, xent) with the one-hot vector replaced by
    the (optionally smoothed) target distribution; equal to it on hard labels without smoothing."""

    def __init__(self, alpha: float = 1.0, gamma: float = 2.0, xent: float = 0.1, smoothing: float = 0.0):
        super().__init__()
        self.alpha, self.gamma, self.xent, self.smoothing = alpha, gamma, xent, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = _smooth(_soft(target, logits.shape[-1]), self.smoothing)
        cosine = (1.0 - F.cosine_similarity(logits, t, dim=-1)).mean()
        cent = -(t * F.log_softmax(F.normalize(logits), dim=-1)).sum(-1)
        focal = self.alpha * (1.0 - torch.exp(-cent)) ** self.gamma * cent
        return cosine + self.xent * focal.mean()


class BiTempered(nn.Module):
    """pytorch-toolbelt's BiTemperedLogisticLoss(t1=0.8, t2=1.2), which takes soft targets as they are."""

    def __init__(self, t1: float = 0.8, t2: float = 1.2, smoothing: float = 0.0):
        super().__init__()
        self.inner = BiTemperedLogisticLoss(t1=t1, t2=t2, smoothing=smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits.float(), _soft(target, logits.shape[-1]))


def build_loss(name: str, label_smoothing: float = 0.0) -> nn.Module:
    """'ce' | 'soft_ce' | 'focal_cosine' | 'bi_tempered', each with the given label smoothing."""
    if name == "ce":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)  # takes probabilities as targets
    if name == "soft_ce":
        return SoftCrossEntropy(smooth_factor=label_smoothing)
    if name == "focal_cosine":
        return FocalCosine(smoothing=label_smoothing)
    if name == "bi_tempered":
        return BiTempered(smoothing=label_smoothing)
    raise ValueError(f"unknown loss '{name}'; choose ce, soft_ce, focal_cosine or bi_tempered")
