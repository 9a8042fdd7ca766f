"""bench/input_size.py's bookkeeping: which test photos carry which crack width."""

from __future__ import annotations

import numpy as np
import pytest

from bench.input_size import WIDTHS, auc, crack_widths
from model.config import CLASSES
from model.data import split_seeds
from model.synth import render_photo


def test_crack_widths_are_the_ones_the_generator_drew_for_the_test_split() -> None:
    widths = crack_widths(12, seed=0)
    seeds = split_seeds("test", 12, 0)
    for i in range(0, 12, 3):  # rendering is the slow part; a third of them is enough to catch a mix-up
        label = CLASSES[i % 2]
        drawn = render_photo(int(seeds[i]), label, split="test").factors.get("crack_width")
        assert widths[i] == (drawn if label == "screen_damage" else None)
    assert {w for w in widths if w is not None} <= set(WIDTHS)
    assert widths[1::2] == [None] * 6 and all(w is not None for w in widths[::2])


def test_auc_equals_the_mann_whitney_statistic_from_ranks() -> None:
    rng = np.random.default_rng(3)
    positives, negatives = rng.normal(1, 1, 40).round(1), rng.normal(0, 1, 60).round(1)  # rounding makes ties
    values = np.concatenate([positives, negatives])
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # tied values share their mean rank
        ranks[values == v] = ranks[values == v].mean()
    u = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    assert auc(positives, negatives) == pytest.approx(u / (len(positives) * len(negatives)))
    assert auc(np.array([2.0]), np.array([1.0])) == 1.0 and auc(np.array([1.0]), np.array([1.0])) == 0.5
