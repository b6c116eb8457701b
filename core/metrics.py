"""Validation metrics: accuracy, macro recall, and the BirdCLEF 2023 padded cmAP."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, recall_score


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"expected probs (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    return probs, labels


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    probs, labels = _check(probs, labels)
    return float((probs.argmax(1) == labels).mean())


def mean_recall(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro recall over the classes that occur in labels or predictions (sklearn's convention)."""
    probs, labels = _check(probs, labels)
    return float(recall_score(labels, probs.argmax(1), average="macro", zero_division=0))


def padded_cmap(probs: np.ndarray, labels: np.ndarray, padding_factor: int = 5) -> float:
    """BirdCLEF 2023 metric: pad `padding_factor` rows of ones onto the one-hot truth and the
    predictions, then sklearn's macro average precision over all C classes. Classes absent from
    `labels` then score 1.0, which is why cmap_present exists."""
    probs, labels = _check(probs, labels)
    truth = np.zeros_like(probs)
    truth[np.arange(len(labels)), labels] = 1.0
    pad = np.ones((padding_factor, probs.shape[1]))
    return float(average_precision_score(np.vstack([truth, pad]), np.vstack([probs, pad]), average="macro"))


def cmap_present(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro average precision over the classes present in `labels`, without padding."""
    probs, labels = _check(probs, labels)
    present = np.unique(labels)
    truth = (labels[:, None] == present[None, :]).astype(np.float64)
    return float(average_precision_score(truth, probs[:, present], average="macro"))


def all_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "cmap": padded_cmap(probs, labels),
        "cmap_present": cmap_present(probs, labels),
        "accuracy": accuracy(probs, labels),
        "mean_recall": mean_recall(probs, labels),
    }
