"""Abstention in training: the card's familiarity and routing, derived again from the checkpoint with the NumPy engine
on the regenerated validation split, and the seeded subset of training photos the distance is fitted on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.abstention import MAX_ABSTAIN, fitting_subset
from model.card import CARD_NAME, CHECKPOINT_NAME
from model.checkpoint import load_checkpoint
from model.data import synthetic_split
from model.familiarity import pooled_features
from model.metrics import review_threshold, softmax
from model.numpy_engine import numpy_network
from model.preprocess import normalize
from model.synth.real_photos import resolve_photos


def test_the_fitting_subset_is_seeded_sorted_and_bounded() -> None:
    assert fitting_subset(10, seed=0, limit=20).tolist() == list(range(10))
    chosen = fitting_subset(1000, seed=4, limit=300)
    assert len(chosen) == len(set(chosen.tolist())) == 300 and np.all(np.diff(chosen) > 0) and chosen[-1] < 1000
    assert np.array_equal(chosen, fitting_subset(1000, seed=4, limit=300))
    assert not np.array_equal(chosen, fitting_subset(1000, seed=5, limit=300))


@pytest.fixture(scope="module")
def card(abstaining_model_dir: Path) -> dict:
    return json.loads((abstaining_model_dir / CARD_NAME).read_text())


def test_the_card_records_the_checkpoints_familiarity_and_each_splits_abstentions(
    abstaining_model_dir: Path, card: dict
) -> None:
    familiarity = load_checkpoint(abstaining_model_dir / CHECKPOINT_NAME).familiarity
    assert familiarity is not None
    fields = card["familiarity"]
    assert fields["threshold"] == familiarity.threshold and fields["max_abstain"] == MAX_ABSTAIN
    assert (fields["feature_dim"], fields["components"]) == familiarity.components.shape[::-1]
    assert set(fields["abstain_rate"]) == {"val", "test", "shifted", "real"}
    for split, rate in fields["abstain_rate"].items():
        routing = card["metrics"][split]["routing"]
        assert routing["unfamiliar"] == round(rate * card["metrics"][split]["n"])
        assert routing["needs_review"] >= routing["unfamiliar"]
    assert fields["abstain_rate"]["val"] <= MAX_ABSTAIN


def test_threshold_and_review_threshold_follow_from_the_validation_photos(
    abstaining_model_dir: Path, card: dict
) -> None:
    """The NumPy engine on the regenerated validation split: at most 2% of its photos lie above the familiarity
    threshold, exactly as many as the card says, and the review threshold is the one fitted on the others."""
    checkpoint = load_checkpoint(abstaining_model_dir / CHECKPOINT_NAME)
    spec = checkpoint.config.preprocessing
    val = synthetic_split("val", card["metrics"]["val"]["n"], spec, seed=0, photos=resolve_photos(None))
    logits, maps = numpy_network(checkpoint.config, checkpoint.weights).forward(normalize(val.pixels, spec))
    distances = checkpoint.familiarity.distances(pooled_features(maps[checkpoint.config.stage_names[-1]]))
    threshold = checkpoint.familiarity.threshold
    # The photo at the threshold is familiar; the NumPy engine's float32 maps put its distance ~1e-6 from PyTorch's.
    unfamiliar = distances > threshold * (1 + 1e-5)
    assert unfamiliar.sum() == card["metrics"]["val"]["routing"]["unfamiliar"] <= MAX_ABSTAIN * len(val)
    assert np.isclose(distances, threshold, rtol=1e-5).any()  # the threshold is a validation photo's distance
    probs = softmax(logits.astype(np.float64), card["calibration"]["temperature"])
    expected = review_threshold(probs[~unfamiliar], val.labels[~unfamiliar], card["calibration"]["target_precision"])
    assert card["calibration"]["review_threshold"] == pytest.approx(expected, rel=1e-5)
