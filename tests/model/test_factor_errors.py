"""model.factor_errors: error rates per class, factor and value."""

from __future__ import annotations

import numpy as np
import pytest

from model.factor_errors import error_rates, split_factors
from model.synth import sample_factors


def test_rates_are_counted_per_class_factor_and_value_worst_first() -> None:
    factors = [
        {"device_kind": "phone", "blur": "none", "split": "test", "jpeg_quality": 80},
        {"device_kind": "phone", "blur": "motion"},
        {"device_kind": "tablet", "blur": "none"},
        {"device_kind": "phone", "blur": "none", "held_out": ["surface"]},
        {"device_kind": "phone", "blur": None},
    ]
    labels = np.array([0, 0, 0, 1, 1])
    wrong = np.array([True, True, False, False, True])
    rows = {(r.label, r.factor, r.value): (r.errors, r.count) for r in error_rates(factors, labels, wrong, 1)}
    assert rows == {
        ("screen_damage", "device_kind", "phone"): (2, 2),
        ("screen_damage", "device_kind", "tablet"): (0, 1),
        ("screen_damage", "blur", "none"): (1, 2),
        ("screen_damage", "blur", "motion"): (1, 1),
        ("general_returns", "device_kind", "phone"): (1, 2),
        ("general_returns", "blur", "none"): (0, 1),
    }
    ordered = error_rates(factors, labels, wrong, 2)
    assert [(r.factor, r.value, r.rate) for r in ordered] == [
        ("device_kind", "phone", 1.0),
        ("blur", "none", 0.5),
        ("device_kind", "phone", 0.5),
    ]


def test_mismatched_lengths_are_named() -> None:
    with pytest.raises(ValueError, match="2 factor dicts, 1 labels and 1 outcomes"):
        error_rates([{}, {}], np.array([0]), np.array([False]), 1)


def test_split_factors_follow_the_split_seeds_and_alternating_labels() -> None:
    drawn = split_factors("test", 4, seed=0)
    assert [f["label"] for f in drawn] == ["screen_damage", "general_returns"] * 2
    assert drawn[3] == sample_factors(2_000_000_003, "general_returns", "test")
