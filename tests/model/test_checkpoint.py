"""The checkpoint keeps the familiarity parameters apart from the weights, exactly, and old checkpoints still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import NetworkConfig
from model.familiarity import fit_familiarity, with_threshold


def _weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"head.weight": rng.normal(size=(2, 4)).astype(np.float32), "head.bias": np.zeros(2, np.float32)}


def test_familiarity_round_trips_exactly_and_stays_out_of_the_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 5))
    familiarity = with_threshold(fit_familiarity(features, rng.integers(0, 2, 60), rank=3), rng.normal(size=(20, 5)))
    save_checkpoint(tmp_path / "c.npz", NetworkConfig(), _weights(), {"seed": 3}, familiarity)
    loaded = load_checkpoint(tmp_path / "c.npz")
    assert set(loaded.weights) == set(_weights()) and loaded.meta == {"seed": 3}
    assert loaded.familiarity is not None
    probe = rng.normal(size=(7, 5))
    np.testing.assert_array_equal(loaded.familiarity.distances(probe), familiarity.distances(probe))
    assert loaded.familiarity.threshold == familiarity.threshold


def test_a_checkpoint_without_familiarity_loads_without_it(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.npz", NetworkConfig(), _weights(), {})
    assert load_checkpoint(tmp_path / "c.npz").familiarity is None


def test_reserved_weight_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "c.npz", NetworkConfig(), {"__familiarity__.means": np.zeros(2)}, {})
