"""Abstention end to end: a tiny trained model exported with its familiarity head, served in-process. A photo far
from its training photos goes to needs_review with reason ``unfamiliar`` (and the metric counts it), in-distribution
photos mostly do not, and ``/v1/route`` answers what ``triage predict`` answers. Which photos are far is derived with
the NumPy engine and ``Familiarity.distances``, not assumed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME
from model.checkpoint import load_checkpoint
from model.config import CLASSES, NEEDS_REVIEW
from model.data import split_seeds
from model.familiarity import pooled_features
from model.numpy_engine import numpy_network
from model.preprocess import normalize, prepare
from service.settings import Settings
from tests.service.test_api_inprocess import KEY, metric_values, post, serving
from triage_cli.commands import main

UNFAMILIAR_METRIC = 'triage_review_reasons_total{reason="unfamiliar"}'


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _candidates() -> dict[str, bytes]:
    """Photos unlike anything generated (uniform noise, flat colours), 256x256 PNG."""
    noise = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    flat = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (255, 0, 0)}
    photos = {"noise.png": _png(noise)}
    for name, colour in flat.items():
        photos[f"{name}.png"] = _png(np.full((256, 256, 3), colour, dtype=np.uint8))
    return photos


def _in_distribution() -> dict[str, bytes]:
    """Generated photos of the test split (never fitted on), alternating classes."""
    from model.synth import render_photo

    seeds = split_seeds("test", 8, seed=0)
    return {
        f"generated-{i}.jpg": render_photo(int(s), CLASSES[i % 2], split="test").encode() for i, s in enumerate(seeds)
    }


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {**_candidates(), **_in_distribution()}


@pytest.fixture(scope="module")
def distances(abstaining_model_dir: Path, photos: dict[str, bytes]) -> dict[str, float]:
    """Each photo's familiarity distance under the NumPy engine (float64 distance of its float32 last stage)."""
    checkpoint = load_checkpoint(abstaining_model_dir / CHECKPOINT_NAME)
    spec = checkpoint.config.preprocessing
    pixels = np.stack([prepare(data, spec).pixels for data in photos.values()])
    _, maps = numpy_network(checkpoint.config, checkpoint.weights).forward(normalize(pixels, spec))
    d = checkpoint.familiarity.distances(pooled_features(maps[checkpoint.config.stage_names[-1]]))
    return dict(zip(photos, d.tolist(), strict=True))


@pytest.fixture(scope="module")
def threshold(abstaining_model_dir: Path) -> float:
    return float(json.loads((abstaining_model_dir / CARD_NAME).read_text())["familiarity"]["threshold"])


@pytest.fixture(scope="module")
def client(
    abstaining_model_dir: Path, metrics_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = Settings(
        handoff_dir=tmp_path_factory.mktemp("handoff"),
        model_path=abstaining_model_dir / ONNX_NAME,
        api_key=KEY,
        device="cpu",
        max_images=16,
        max_bytes=2_000_000,
        max_pixels=4_000_000,
        max_batch_size=4,
        batch_timeout=0.05,
        request_timeout=120.0,
    )
    with serving(settings) as (served, _):
        yield served


def test_far_photos_abstain_as_unfamiliar_and_generated_photos_mostly_do_not(
    client: TestClient, photos: dict[str, bytes], distances: dict[str, float], threshold: float
) -> None:
    far = [name for name in _candidates() if distances[name] > 1.5 * threshold]
    assert far, f"no candidate is clearly unfamiliar: {distances} against threshold {threshold}"
    before = metric_values(client, UNFAMILIAR_METRIC)[0]
    response = post(client, *photos.items())
    assert response.status_code == 200, response.text
    answers = dict(zip(photos, response.json()["images"], strict=True))
    for name in far:
        assert answers[name]["route"] == NEEDS_REVIEW and answers[name]["reason"] == "unfamiliar", name
    for name, d in distances.items():
        if abs(d - threshold) > 1e-4 * threshold:  # clear of float32 rounding at the threshold
            assert (answers[name].get("reason") == "unfamiliar") == (d > threshold), (name, d, threshold)
    abstained = [name for name, answer in answers.items() if answer.get("reason") == "unfamiliar"]
    generated = [name for name in _in_distribution() if name in abstained]
    assert len(generated) <= len(_in_distribution()) // 4, f"generated photos abstained on: {generated}"
    assert metric_values(client, UNFAMILIAR_METRIC)[0] - before == len(abstained)


def test_the_service_answers_what_triage_predict_answers(
    client: TestClient,
    photos: dict[str, bytes],
    abstaining_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = []
    for name, data in photos.items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    assert main(["predict", *map(str, files), "--json", "--model", str(abstaining_model_dir / ONNX_NAME)]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = post(client, *photos.items()).json()["images"]
    assert len(predicted) == len(served) == len(photos)
    keys = ("route", "reason", "confidence")
    for local, remote in zip(predicted, served, strict=True):
        assert {k: local.get(k) for k in keys} == {k: remote.get(k) for k in keys}, local["file"]
        assert local["probabilities"] == pytest.approx(remote["probabilities"], abs=1e-9)
