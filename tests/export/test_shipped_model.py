"""The shipped artifacts: ONNX Runtime agrees with PyTorch, hashes match the card, everything is small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME, read_card, sha256_file
from model.preprocess import prepare

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def card() -> dict:
    return read_card(ARTIFACTS / CARD_NAME)


def test_card_hashes_match_the_shipped_files(card: dict) -> None:
    for name in (CHECKPOINT_NAME, ONNX_NAME):
        assert card["artifacts"][name]["sha256"] == sha256_file(ARTIFACTS / name), name
    shipped = sorted(p.name for p in ARTIFACTS.glob("*.onnx"))
    assert shipped == sorted([ONNX_NAME] + ([card["quantization"]["file"]] if card["quantization"]["shipped"] else []))
    for name in shipped:
        assert card["artifacts"][name]["sha256"] == sha256_file(ARTIFACTS / name), name


def test_artifacts_are_under_ten_megabytes() -> None:
    total = sum(p.stat().st_size for p in ARTIFACTS.iterdir() if p.is_file())
    assert total < 10 * 1024 * 1024


def test_card_figures_are_reproduced_by_the_shipped_onnx_on_the_test_split(card: dict) -> None:
    """Regenerate the test split (same seeds as training's) and route it with ONNX Runtime: the card's accuracy and
    per-class recall must be what the shipped file really does (argmax flips from <= 1e-4 logit noise allowed)."""
    import onnxruntime as ort

    from model.config import CLASSES, Preprocessing
    from model.data import synthetic_split
    from model.preprocess import normalize

    spec = Preprocessing.from_dict(card["preprocessing"])
    recorded = card["metrics"]["test"]
    test = synthetic_split("test", recorded["n"], spec, seed=card["training"]["seed"])
    session = ort.InferenceSession(str(ARTIFACTS / ONNX_NAME), providers=["CPUExecutionProvider"])
    predicted = np.concatenate(
        [
            session.run(["logits"], {"input": normalize(test.pixels[i : i + 100], spec)})[0].argmax(1)
            for i in range(0, len(test), 100)
        ]
    )
    assert recorded["n"] >= 2000
    assert abs(float((predicted == test.labels).mean()) - recorded["accuracy"]) <= 2 / recorded["n"]
    for k, name in enumerate(CLASSES):
        recall = float((predicted[test.labels == k] == k).mean())
        assert abs(recall - recorded["per_class"][name]["recall"]) <= 4 / recorded["n"], name

    quantization = card["quantization"]
    if quantization["shipped"]:  # the int8 file keeps its promise: its recorded accuracy, within half a point of fp32
        int8 = ort.InferenceSession(str(ARTIFACTS / quantization["file"]), providers=["CPUExecutionProvider"])
        predicted8 = np.concatenate(
            [
                int8.run(["logits"], {"input": normalize(test.pixels[i : i + 100], spec)})[0].argmax(1)
                for i in range(0, len(test), 100)
            ]
        )
        accuracy8 = float((predicted8 == test.labels).mean())
        assert abs(accuracy8 - quantization["results"]["int8"]["accuracy"]) <= 4 / recorded["n"]
        assert recorded["accuracy"] - accuracy8 <= 0.005


def test_onnx_runtime_matches_pytorch_on_32_generated_photos() -> None:
    from export.pipeline import load_torch_model, max_logit_difference
    from model.synth import render_photo

    net = load_torch_model(ARTIFACTS / CHECKPOINT_NAME)
    spec = net.config.preprocessing
    photos = [render_photo(4_000_000_000 + i, ("screen_damage", "general_returns")[i % 2]) for i in range(32)]
    batch = np.stack([prepare(p.encode(), spec).tensor for p in photos])
    assert max_logit_difference(net, ARTIFACTS / ONNX_NAME, batch) <= 1e-4


def test_onnx_metadata_matches_the_card(card: dict) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(ARTIFACTS / ONNX_NAME)).metadata_props}
    assert json.loads(meta["preprocessing"]) == card["preprocessing"]
    assert json.loads(meta["classes"]) == card["classes"]
    assert meta["version"] == card["version"]
    assert json.loads(meta["network"]) == card["network"]


def test_card_calibration_is_recomputed_from_the_validation_split(card: dict) -> None:
    """Temperature, review threshold and validation ECE: fitted on the regenerated validation split with the shipped
    file's logits, they are the card's (the threshold on calibrated probabilities, as routing applies it)."""
    import onnxruntime as ort

    from model.config import Preprocessing
    from model.data import synthetic_split
    from model.metrics import expected_calibration_error, fit_temperature, review_threshold, softmax
    from model.preprocess import normalize

    spec = Preprocessing.from_dict(card["preprocessing"])
    calibration = card["calibration"]
    val = synthetic_split("val", card["metrics"]["val"]["n"], spec, seed=card["training"]["seed"])
    session = ort.InferenceSession(str(ARTIFACTS / ONNX_NAME), providers=["CPUExecutionProvider"])
    batches = [normalize(val.pixels[i : i + 100], spec) for i in range(0, len(val), 100)]
    logits = np.concatenate([session.run(["logits"], {"input": x})[0] for x in batches]).astype(np.float64)
    temperature = fit_temperature(logits, val.labels)
    assert temperature == pytest.approx(calibration["temperature"], rel=1e-4)
    probs = softmax(logits, calibration["temperature"])
    threshold = review_threshold(probs, val.labels, calibration["target_precision"])
    assert threshold == pytest.approx(calibration["review_threshold"], abs=1e-4)
    assert expected_calibration_error(probs, val.labels) == pytest.approx(card["metrics"]["val"]["ece"], abs=1e-4)
