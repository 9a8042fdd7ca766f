"""Metrics and calibration, checked against values derived by hand or by construction."""

from __future__ import annotations

import numpy as np
import pytest

from model.metrics import (
    classification_report,
    expected_calibration_error,
    fit_temperature,
    review_threshold,
    routing_report,
    softmax,
)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(20000, 2))
    true_t = 2.5
    p = softmax(logits, true_t)
    labels = (rng.random(len(p)) < p[:, 1]).astype(np.int64)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_ece_is_zero_for_calibrated_bins_and_matches_a_hand_computation() -> None:
    # Four photos at confidence 0.75, three correct: accuracy equals confidence -> ECE 0.
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # Two at 0.9 (both right) and two at 0.6 (both wrong): 0.5*|1-0.9| + 0.5*|0-0.6| = 0.35.
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    assert expected_calibration_error(probs, np.array([0, 1, 1, 0])) == pytest.approx(0.35)


def test_classification_report_counts() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1, 1])
    report = classification_report(probs, labels, ("a", "b"))
    assert report["confusion"] == [[2, 1], [1, 1]]
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["f1"] == pytest.approx(0.5)


def test_review_threshold_is_the_lowest_that_reaches_the_precision_target() -> None:
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 5000)
    pred = rng.integers(0, 2, 5000)
    correct = rng.random(5000) < conf  # accuracy grows with confidence
    labels = np.where(correct, pred, 1 - pred)
    probs = np.where(pred[:, None] == 0, np.stack([conf, 1 - conf], 1), np.stack([1 - conf, conf], 1))
    t = review_threshold(probs, labels, 0.99)
    routed = routing_report(probs, labels, t)
    assert routed["auto_routed_precision"] >= 0.99
    for c in (0, 1):
        mask = (probs.max(1) >= t) & (pred == c)
        assert (labels[mask] == c).mean() >= 0.99
    lower = np.max(probs.max(1)[probs.max(1) < t])  # the next lower candidate fails the target
    mask = probs.max(1) >= lower
    per_class = [(labels[mask & (pred == c)] == c).mean() for c in (0, 1)]
    assert min(per_class) < 0.99
    assert 0 < routed["coverage"] < 1


def test_review_threshold_never_goes_below_one_half_with_three_classes() -> None:
    probs = np.array([[0.34, 0.33, 0.33], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    assert review_threshold(probs, np.array([0, 1, 2]), 0.99) == 0.5  # every routed photo right: the floor


def test_a_review_threshold_no_photo_reaches_routes_nothing() -> None:
    """Even a photo at probability exactly 1.0 is wrong here, so no threshold reaches 99%: nothing auto-routes."""
    probs = softmax(np.array([[40.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    labels = np.array([1, 0, 1])
    assert probs[0, 0] == 1.0
    t = review_threshold(probs, labels, 0.99)
    assert t > 1.0
    assert routing_report(probs, labels, t)["coverage"] == 0.0
