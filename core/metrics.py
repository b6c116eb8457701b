"""Validation metrics: accuracy, macro recall, and the BirdCLEF 2023 padded cmAP: sklearn's definitions, in
numpy (every trial scores every epoch, and importing sklearn.metrics cost each trial's worker 0.7 s)."""
from __future__ import annotations

import numpy as np


def average_precision(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per column, sklearn.metrics.average_precision_score: the sum over score thresholds (each distinct
    score) of the step in recall times the precision there, which is the mean over the positives of the
    precision among the items scored at least as high as each. Columns without a positive are sklearn's."""
    truth, scores = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    positives = truth.sum(0)
    if not (positives > 0).all():
        from sklearn.metrics import average_precision_score

        return np.asarray(average_precision_score(truth, scores, average=None), np.float64)
    s, hit = np.ascontiguousarray(scores.T), np.ascontiguousarray(truth.T) > 0  # one row per class
    ranked = np.sort(s, axis=1)
    out = np.empty(len(s))
    for k in range(len(s)):
        pos = s[k, hit[k]]
        at_least = len(ranked[k]) - np.searchsorted(ranked[k], pos, side="left")  # items scored >= each
        pos_at_least = len(pos) - np.searchsorted(np.sort(pos), pos, side="left")  # positives among them
        out[k] = np.mean(pos_at_least / at_least)
    return out


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
    pred = probs.argmax(1)
    classes = np.union1d(labels, pred)
    k = int(classes.max()) + 1
    support = np.bincount(labels, minlength=k)[classes]
    hits = np.bincount(labels[labels == pred], minlength=k)[classes]
    return float(np.mean(np.where(support > 0, hits / np.maximum(support, 1), 0.0)))


def padded_cmap(probs: np.ndarray, labels: np.ndarray, padding_factor: int = 5) -> float:
    """BirdCLEF 2023 metric: pad `padding_factor` rows of ones onto the one-hot truth and the
    predictions, then the macro average precision over all C classes (sklearn's). Classes absent from
    `labels` then score 1.0, which is why cmap_present exists."""
    probs, labels = _check(probs, labels)
    truth = np.zeros_like(probs)
    truth[np.arange(len(labels)), labels] = 1.0
    pad = np.ones((padding_factor, probs.shape[1]))
    return float(average_precision(np.vstack([truth, pad]), np.vstack([probs, pad])).mean())


def cmap_present(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro average precision over the classes present in `labels`, without padding."""
    probs, labels = _check(probs, labels)
    present = np.unique(labels)
    truth = (labels[:, None] == present[None, :]).astype(np.float64)
    return float(average_precision(truth, probs[:, present]).mean())


def all_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "cmap": padded_cmap(probs, labels),
        "cmap_present": cmap_present(probs, labels),
        "accuracy": accuracy(probs, labels),
        "mean_recall": mean_recall(probs, labels),
    }
