"""Classification metrics and calibration in NumPy: accuracy, per-class P/R/F1, confusion, ECE, temperature,
and the review threshold that keeps auto-routed photos precise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``(N, K)`` logits -> ``(N, K)`` float64 probabilities of ``softmax(logits / temperature)``; rows sum to 1.
    Training fits the temperature and the review threshold with it, and serving applies them with it."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {logits.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    p = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, 1e-300, None))))


TEMPERATURE_BOUNDS = (0.05, 20.0)  # where ``fit_temperature`` searches; a fit at either end is a warning sign


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (golden-section search on log T within ``TEMPERATURE_BOUNDS``)."""
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def temperature_at_bound(temperature: float, rel: float = 1e-3) -> bool:
    """Whether a fitted temperature sits at an end of ``TEMPERATURE_BOUNDS`` (the search wanted to go further)."""
    return any(abs(np.log(temperature / bound)) <= rel for bound in TEMPERATURE_BOUNDS)


def choose_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Fit the temperature on ``(N, K)`` validation logits, and keep it only if it lowers the validation ECE.

    The NLL fit can make ECE worse (a few confidently wrong photos pull the temperature up and every other photo's
    confidence down with it); then the uncalibrated probabilities, temperature 1, are kept. Returns ``temperature``
    (the one to use), ``choice`` (``"fitted"`` or ``"uncalibrated"``), ``fitted`` and both validation ECEs.
    """
    fitted = fit_temperature(logits, labels)
    ece_fitted = expected_calibration_error(softmax(logits, fitted), labels)
    ece_raw = expected_calibration_error(softmax(logits), labels)
    keep = ece_fitted < ece_raw
    return {
        "temperature": fitted if keep else 1.0,
        "choice": "fitted" if keep else "uncalibrated",
        "fitted": fitted,
        "val_ece_fitted": ece_fitted,
        "val_ece_uncalibrated": ece_raw,
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin mass."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_report(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, confusion matrix (rows true, columns predicted), ECE."""
    pred = probs.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        precision = tp / max(confusion[:, i].sum(), 1)
        recall = tp / max(confusion[i, :].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[i].sum()),
        }
    return {
        "n": len(labels),
        "accuracy": float((pred == labels).mean()),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "ece": expected_calibration_error(probs, labels),
    }


def routing_report(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """What the review threshold does: coverage (share auto-routed) and precision of the auto-routed photos."""
    routed = probs.max(axis=1) >= threshold
    correct = probs.argmax(axis=1) == labels
    return {
        "threshold": float(threshold),
        "coverage": float(routed.mean()),
        "auto_routed_precision": float(correct[routed].mean()) if routed.any() else 1.0,
        "needs_review": int((~routed).sum()),
    }


def reaches_precision(probs: np.ndarray, labels: np.ndarray, threshold: float, target_precision: float) -> bool:
    """Whether, for every class, the photos auto-routed to it at ``threshold`` (``confidence >= threshold``) are at
    least ``target_precision`` correct. Vacuously true when nothing is routed."""
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    routed = conf >= threshold
    return all((labels[routed & (pred == c)] == c).mean() >= target_precision for c in np.unique(pred[routed]))


def review_threshold(probs: np.ndarray, labels: np.ndarray, target_precision: float = 0.99) -> float:
    """The lowest confidence threshold at which, for every class, photos auto-routed to it are at least
    ``target_precision`` correct (so coverage is as high as that allows). Never below 0.5 and never above 1: when no
    threshold reaches the target it is 1.0, the most a probability can be, and only photos the model is certain of
    route automatically (``reaches_precision`` tells; training warns)."""
    conf = probs.max(axis=1)
    for t in np.unique(np.concatenate([[0.5], conf[(conf >= 0.5) & (conf < 1.0)], [1.0]])):
        if reaches_precision(probs, labels, float(t), target_precision):
            return float(t)
    return 1.0
