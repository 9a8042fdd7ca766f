"""The warnings training writes into the card: each raised by the failure it names, none for the shipped model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.config import CLASSES
from model.metrics import TEMPERATURE_BOUNDS, classification_report, fit_temperature, routing_report, softmax
from model.weak_model import CHANCE_MARGIN, chance_accuracy, near_chance, warnings_banner, weak_model_warnings

SHIPPED_CARD = Path(__file__).resolve().parents[2] / "artifacts" / "model_card.json"


def report(accuracy: float, n: int = 1000, coverage: float = 0.7) -> dict[str, Any]:
    """A balanced two-class split's report with ``accuracy`` and ``coverage``, computed by the real functions."""
    labels = np.arange(n) % 2
    right = np.arange(n) < round(accuracy * n)
    pred = np.where(right, labels, 1 - labels)
    conf = np.where(np.arange(n) < round(coverage * n), 0.95, 0.6)
    probs = np.where(pred[:, None] == 0, np.stack([conf, 1 - conf], 1), np.stack([1 - conf, conf], 1))
    out = classification_report(probs, labels, CLASSES)
    out["routing"] = routing_report(probs, labels, 0.9)
    return out


def calibration(**overrides: Any) -> dict[str, Any]:
    base = {"temperature_fitted": 1.3, "review_threshold": 0.9, "threshold_reaches_target": True}
    return {**base, "target_precision": 0.99, **overrides}


def test_a_good_model_has_no_warnings() -> None:
    assert weak_model_warnings({"val": report(0.92), "test": report(0.91)}, calibration()) == []


def test_the_shipped_model_has_no_warnings() -> None:
    card = json.loads(SHIPPED_CARD.read_text())
    calib = card["calibration"]
    fitted = calib.get("temperature_fitted", calib["temperature"])  # cards written before the choice was recorded
    reached = calib["review_threshold"] <= 1.0 and card["metrics"]["val"]["routing"]["auto_routed_precision"] >= 0.99
    assert (
        weak_model_warnings(
            card["metrics"], {**calib, "temperature_fitted": fitted, "threshold_reaches_target": reached}
        )
        == []
    )


def test_accuracy_near_chance_is_a_warning_on_val_and_test() -> None:
    found = weak_model_warnings({"val": report(0.5), "test": report(0.52)}, calibration())
    assert len(found) == 2 and all("near chance (0.5000" in w for w in found)
    assert found[0].startswith("val accuracy 0.5000") and found[1].startswith("test accuracy 0.5200")


def test_near_chance_is_measured_against_the_largest_class_and_the_split_size() -> None:
    big = report(0.5)
    assert chance_accuracy(big) == 0.5
    assert near_chance(report(0.5 + CHANCE_MARGIN - 0.01)) and not near_chance(report(0.5 + CHANCE_MARGIN + 0.01))
    # 32 photos: two standard errors of a coin are 0.177, so 0.65 is no evidence of learning
    assert near_chance(report(0.65, n=32)) and not near_chance(report(0.72, n=32))
    skewed = report(0.9)
    skewed["per_class"][CLASSES[0]]["support"], skewed["per_class"][CLASSES[1]]["support"] = 920, 80
    assert chance_accuracy(skewed) == 0.92 and near_chance(skewed)  # always answering the big class does better


@pytest.mark.parametrize("bound", TEMPERATURE_BOUNDS)
def test_a_temperature_pinned_at_its_bound_is_a_warning(bound: float) -> None:
    (found,) = weak_model_warnings({"val": report(0.92)}, calibration(temperature_fitted=bound))
    assert f"fitted temperature {bound:.4g} is pinned at a bound" in found


def test_an_unreachable_threshold_and_no_coverage_are_warnings() -> None:
    found = weak_model_warnings(
        {"val": report(0.92, coverage=0.0)}, calibration(review_threshold=1.0, threshold_reaches_target=False)
    )
    assert len(found) == 2
    assert "no review threshold makes the photos routed automatically 99% precise" in found[0]
    assert "only 0.0% of validation photos are routed automatically at the review threshold 1.0000" in found[1]
    (tiny,) = weak_model_warnings({"val": report(0.92, coverage=0.03)}, calibration())
    assert "only 3.0% of validation photos" in tiny


def test_too_little_data_raises_every_warning_at_once() -> None:
    """What 200 photos for 3 epochs gave: logits that say nothing, so the fit pins the temperature at 20 and every
    photo sits near 0.5 confidence, far below any threshold that could be 99% precise."""
    half = np.random.default_rng(0).normal(0, 0.3, (500, 2))
    logits = np.concatenate([half, half[:, ::-1]])  # each photo's mirror image with the same label: no information
    labels = np.tile(np.arange(500) % 2, 2)
    temperature = fit_temperature(logits, labels)
    probs = softmax(logits, temperature)
    metrics = {"val": classification_report(probs, labels, CLASSES)}
    metrics["val"]["routing"] = routing_report(probs, labels, 1.0)
    found = weak_model_warnings(
        metrics, calibration(temperature_fitted=temperature, review_threshold=1.0, threshold_reaches_target=False)
    )
    assert temperature == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)
    starts = [["val", "accuracy"], ["the", "fitted"], ["no", "review"], ["only", "0.0%"]]
    assert [w.split(" ")[:2] for w in found] == starts
    banner = warnings_banner(found)
    assert "TOO WEAK" in banner and all(f"WARNING: {w}" in banner for w in found)
