"""The network configuration as it travels with the model: round trips, older artifacts, invalid values."""

from __future__ import annotations

import json
import re

import pytest

from model.config import GLOBAL_POOLS, NetworkConfig, Preprocessing, Stage


@pytest.mark.parametrize("pool", GLOBAL_POOLS)
def test_config_round_trips_through_json(pool: str) -> None:
    config = NetworkConfig(stages=(Stage("a", 8), Stage("b", 4, pool=0)), global_pool=pool)
    again = NetworkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.global_pool == pool


def test_a_config_written_before_the_pool_was_named_averages() -> None:
    """Checkpoints and ONNX metadata written before ``global_pool`` existed came from the average-pooling network."""
    old = NetworkConfig().to_dict()
    del old["global_pool"]
    assert NetworkConfig.from_dict(old).global_pool == "avg"
    assert NetworkConfig(global_pool="max").to_dict()["global_pool"] == "max"


def test_an_unknown_pool_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'median'"):
        NetworkConfig(global_pool="median", preprocessing=Preprocessing())


def test_preprocessing_written_before_the_jpeg_draft_was_named_covers_the_square() -> None:
    """Models made before ``jpeg_draft`` existed were trained on JPEGs reduced only as far as ``size x size``."""
    old = Preprocessing(jpeg_draft="letterbox").to_dict()
    del old["jpeg_draft"]
    assert Preprocessing.from_dict(old).jpeg_draft == "square"
    letterbox = Preprocessing(jpeg_draft="letterbox")
    assert Preprocessing.from_dict(json.loads(letterbox.to_json())) == letterbox


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"jpeg_draft": "Letterbox"}, "jpeg_draft must be one of letterbox, square, got 'Letterbox'"),
        ({"interpolation": "nearest"}, "interpolation must be one of bilinear, bicubic, got 'nearest'"),
        ({"resize": "stretch"}, "resize must be one of letterbox, got 'stretch'"),
        ({"size": 0}, "size >= 1"),
        ({"std": (0.2, 0.0, 0.2)}, "3 positive stds"),
        ({"classes": ()}, "classes"),
    ],
)
def test_a_preprocessing_spec_no_code_path_handles_is_refused_when_read(change: dict, message: str) -> None:
    """From a model card these failed photo by photo: every JPEG a 422, or a KeyError failing a whole batch."""
    with pytest.raises(ValueError, match=re.escape(message)):
        Preprocessing.from_dict({**Preprocessing().to_dict(), **change})
