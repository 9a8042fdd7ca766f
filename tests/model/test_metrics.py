"""Metrics and calibration, checked against values derived by hand or by construction."""

from __future__ import annotations

import numpy as np
import pytest

from model.metrics import (
    TEMPERATURE_BOUNDS,
    choose_temperature,
    classification_report,
    expected_calibration_error,
    fit_temperature,
    reaches_precision,
    review_threshold,
    routing_report,
    softmax,
    temperature_at_bound,
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


def test_an_unreachable_review_threshold_is_one_not_above() -> None:
    """Even a photo at probability exactly 1.0 is wrong here, so no threshold reaches 99%: the threshold is 1.0, the
    most a probability can be (never the next float above it), and says so through ``reaches_precision``."""
    probs = softmax(np.array([[40.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    labels = np.array([1, 0, 1])
    assert probs[0, 0] == 1.0
    t = review_threshold(probs, labels, 0.99)
    assert t == 1.0
    assert not reaches_precision(probs, labels, t, 0.99)
    assert routing_report(probs, labels, t)["coverage"] == pytest.approx(1 / 3)  # only the certain (wrong) photo


def test_a_model_that_is_always_wrong_routes_nothing_at_a_threshold_of_one() -> None:
    """No threshold below 1 reaches 99% when every photo is wrong, and no probability reaches 1: nothing routes."""
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 1, (400, 2)))
    labels = probs.argmin(axis=1)
    t = review_threshold(probs, labels, 0.99)
    assert t == 1.0 and routing_report(probs, labels, t)["coverage"] == 0.0


def test_reaches_precision_is_per_class() -> None:
    """200 right photos of class 0 and one wrong of class 1 at 0.7: 99.5% right over all, but class 1's are not."""
    probs = np.array([[0.9, 0.1]] * 200 + [[0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0] * 200 + [0, 1])
    routed = probs.max(axis=1) >= 0.7
    assert (probs.argmax(axis=1) == labels)[routed].mean() >= 0.99
    assert not reaches_precision(probs, labels, 0.7, 0.99)
    assert reaches_precision(probs, labels, 0.75, 0.99)  # the wrong photo at 0.7 goes to review
    assert reaches_precision(probs, labels, 1.0, 0.99)  # nothing routed: vacuously precise
    assert review_threshold(probs, labels, 0.99) == 0.8


def test_temperature_scaling_is_kept_only_when_it_lowers_validation_ece() -> None:
    """Overconfident logits (labels drawn at temperature 2.5): the fitted temperature lowers ECE and is kept.
    A calibrated bulk plus a few photos that are certain and wrong: NLL pulls the temperature up to soften those,
    which makes the bulk underconfident, so ECE gets worse and the uncalibrated probabilities are kept."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(5000, 2))
    labels = (rng.random(len(logits)) < softmax(logits, 2.5)[:, 1]).astype(np.int64)
    chosen = choose_temperature(logits, labels)
    assert chosen["choice"] == "fitted" and chosen["temperature"] == chosen["fitted"] == fit_temperature(logits, labels)
    assert chosen["val_ece_fitted"] < chosen["val_ece_uncalibrated"]
    assert chosen["val_ece_uncalibrated"] == expected_calibration_error(softmax(logits), labels)

    n_bulk, n_wrong = 1000, 10
    margin = np.log(0.8 / 0.2)  # the bulk at 80% confidence, 80% right: calibrated as it is
    bulk = np.stack([np.full(n_bulk, margin), np.zeros(n_bulk)], 1)
    bulk_labels = (np.arange(n_bulk) % 5 == 0).astype(np.int64)
    wrong = np.stack([np.full(n_wrong, 30.0), np.zeros(n_wrong)], 1)
    logits, labels = np.concatenate([bulk, wrong]), np.concatenate([bulk_labels, np.ones(n_wrong, np.int64)])
    chosen = choose_temperature(logits, labels)
    fitted = fit_temperature(logits, labels)
    assert fitted > 1.5  # NLL wants the confident mistakes softened
    ece_fitted = expected_calibration_error(softmax(logits, fitted), labels)
    ece_raw = expected_calibration_error(softmax(logits), labels)
    assert ece_raw == pytest.approx(n_wrong / (n_bulk + n_wrong), rel=1e-6)  # only the certain mistakes miss
    assert ece_fitted > ece_raw
    assert chosen == {
        "temperature": 1.0,
        "choice": "uncalibrated",
        "fitted": fitted,
        "val_ece_fitted": ece_fitted,
        "val_ece_uncalibrated": ece_raw,
    }


def test_a_temperature_fit_with_nothing_to_learn_is_pinned_at_its_bound() -> None:
    """Logits that say nothing about the label (each photo's logits also come swapped, with the same label): every
    pair's NLL, -log s(d/T) - log s(-d/T), falls as T grows, so the fit runs to the top of its range."""
    half = np.random.default_rng(2).normal(0, 3, (1000, 2))
    logits = np.concatenate([half, half[:, ::-1]])
    labels = np.tile(np.random.default_rng(3).integers(0, 2, 1000), 2)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3) and temperature_at_bound(fitted)
    assert temperature_at_bound(TEMPERATURE_BOUNDS[0]) and not temperature_at_bound(1.0)
