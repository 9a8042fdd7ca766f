"""The report's pictures, drawn with matplotlib's Agg backend into PNG bytes (no display, no fonts fetched)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from model.metrics import expected_calibration_error

RELIABILITY_BINS = 15  # as model.metrics.expected_calibration_error


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def learning_curves(history: Sequence[dict[str, Any]], best_epoch: int) -> bytes:
    """Loss and accuracy per epoch, training and validation, with the kept epoch marked."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="training")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    if all("train_accuracy" in h for h in history):
        acc_ax.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="training (augmented batches)")
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def confusion_matrix(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """Counts, rows the true class and columns the predicted one."""
    counts = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        colour = "white" if value > counts.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=colour, fontsize=12)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(classes)
    ax.set_yticklabels(classes)
    return _png(fig)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin with photos in it: its range, photo count, mean confidence and accuracy."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    return [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "count": int((which == b).sum()),
            "confidence": float(conf[which == b].mean()),
            "accuracy": float(correct[which == b].mean()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def reliability(raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, temperature: float) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling, with each one's ECE."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, probs, title in ((axes[0], raw, "uncalibrated"), (axes[1], calibrated, f"temperature {temperature:.3f}")):
        rows = reliability_bins(probs, labels)
        centres = [(r["low"] + r["high"]) / 2 for r in rows]
        ax.bar(centres, [r["accuracy"] for r in rows], width=1 / RELIABILITY_BINS, edgecolor="black", alpha=0.7)
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="crimson", label="bin mean")
        ax.set(xlim=(0.45, 1.0), ylim=(0, 1.02), xlabel="confidence", title=f"{title}: ECE {ece(probs, labels):.4f}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8, loc="upper left")
    return _png(fig)


def ece(probs: np.ndarray, labels: np.ndarray) -> float:
    return expected_calibration_error(probs, labels, RELIABILITY_BINS)


def coverage_curve(probs: np.ndarray, labels: np.ndarray, threshold: float, target: float) -> bytes:
    """Precision of auto-routed photos against the share auto-routed, as the review threshold moves; the shipped
    threshold and the target precision marked."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    order = np.argsort(-conf)
    routed = np.arange(1, len(conf) + 1)
    precision = np.cumsum(correct[order]) / routed
    coverage = routed / len(conf)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(coverage, precision, label="threshold sweep")
    ax.axhline(target, color="green", linestyle="--", label=f"target precision {target:.0%}")
    at = conf >= threshold
    if at.any():
        ax.plot(
            at.mean(),
            correct[at].mean(),
            "o",
            color="crimson",
            markersize=8,
            label=f"shipped threshold {threshold:.3f}",
        )
    ax.set(xlabel="share auto-routed (the rest goes to a person)", ylabel="precision of auto-routed photos")
    ax.set(xlim=(0, 1.01), ylim=(max(0.0, float(precision.min()) - 0.02), 1.005))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def factor_errors(rows: Sequence[Any], title: str) -> bytes:
    """Horizontal bars: error rate per (class, factor = value), worst first (rows from ``model.report.factors``)."""
    rows = list(rows)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.2))
    ax.barh(
        range(len(rows)),
        [r.rate for r in rows],
        color=["#c0392b" if r.label == "screen_damage" else "#2874a6" for r in rows],
    )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r.label}: {r.factor} = {r.value} (n={r.count})" for r in rows], fontsize=8)
    ax.set(xlabel="error rate", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def overlay(pixels: np.ndarray, cam: np.ndarray, size: int = 160) -> bytes:
    """A photo ``uint8 (S, S, 3)`` with its class-activation map ``(H, W)`` blended over it, as a PNG."""
    span = float(cam.max() - cam.min()) or 1.0
    heat = Image.fromarray(np.uint8(255 * (cam - cam.min()) / span)).resize(pixels.shape[1::-1], Image.BILINEAR)
    colours = (matplotlib.colormaps["inferno"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.float32)
    blended = (0.55 * pixels.astype(np.float32) + 0.45 * colours).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blended).resize((size, size), Image.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()
