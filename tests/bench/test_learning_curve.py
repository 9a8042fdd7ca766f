"""``bench/learning_curve.py``: the power-law fit recovers a known law, and a model card is read into a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.learning_curve import passes_for, power_law, read_card


def test_power_law_recovers_scale_and_exponent_of_noiseless_errors() -> None:
    passes = np.array([1e4, 3e4, 1e5, 3e5])
    scale, exponent = power_law(passes, 700.0 * passes**-0.4)
    assert scale == pytest.approx(700.0, rel=1e-9)
    assert exponent == pytest.approx(-0.4, rel=1e-9)
    # Ten times fewer errors at -0.4 takes 10 ** (1 / 0.4) times the passes.
    assert passes_for(700.0 * 1e4**-0.4 / 10, scale, exponent) == pytest.approx(1e4 * 10**2.5, rel=1e-9)


def test_read_card_turns_accuracy_into_percent_error(tmp_path: Path) -> None:
    card = {
        "training": {"data": {"counts": {"train": 3000}}, "epochs_run": 4, "seed": 2, "seconds_total": 120.0},
        "metrics": {
            "test": {"accuracy": 0.75, "per_class": {"a": {"recall": 0.7}, "b": {"recall": 0.8}}},
            "shifted": {"accuracy": 0.6},
        },
    }
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(card))
    run = read_card(path, "r")
    assert (run.passes, run.seed, run.seconds) == (12000, 2, 120.0)
    assert run.test_error == pytest.approx(25.0)
    assert run.shifted_error == pytest.approx(40.0)
    assert run.recalls == pytest.approx((70.0, 80.0))
