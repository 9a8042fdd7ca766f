"""The model card: what the shipped model is, how it was made, and how well it does.

A JSON document next to the artifacts. Training writes most of it; export adds the ONNX file's hash and the
per-layer receptive-field table; serving reads it (classes, preprocessing, temperature, threshold, hashes).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.config import Preprocessing

CARD_NAME = "model_card.json"
CHECKPOINT_NAME = "triage_checkpoint.npz"
ONNX_NAME = "triage.onnx"

# A model ``triage train`` makes is named for what it is unless ``--name``/``--version`` say otherwise: not the
# shipped model, and when it was trained. Serving reads both from the card (``/v1/model``, every answer's ``model``,
# the model-info metric's labels).
RETRAINED_NAME = "ticket-photo-triage-retrained"


def retrained_version(when: datetime | None = None) -> str:
    """The default version of a retrained model: the UTC time training started, ISO 8601 basic format
    (``20261207T221112Z``), which sorts as it is ordered in time and needs no quoting in labels or file names."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%SZ")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(path: Path) -> dict[str, Any]:
    """Load a model card, checking the fields every consumer relies on."""
    card = json.loads(path.read_text())
    missing = [k for k in ("name", "version", "classes", "preprocessing", "calibration") if k not in card]
    if missing:
        raise ValueError(f"model card {path} lacks {missing}")
    return card


def write_card(path: Path, card: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")


def card_preprocessing(card: dict[str, Any]) -> Preprocessing:
    return Preprocessing.from_dict(card["preprocessing"])
