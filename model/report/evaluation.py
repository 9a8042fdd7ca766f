"""A model folder's predictions on its evaluated splits, regenerated from what its card says it was tested on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import load_checkpoint
from model.config import CLASSES, Preprocessing
from model.data import FOLDER_FRACTIONS, ArrayDataset, image_folder, split_seeds, stratified_split, synthetic_split
from model.network import build_network, load_numpy_state
from model.preprocess import normalize

EVALUATED_SPLITS = ("test", "shifted", "real")  # in this order, those the card has metrics for


@dataclass(frozen=True)
class SplitPredictions:
    """One split: ``pixels uint8 (N, S, S, 3)`` as the network saw them, ``labels (N,)``, ``logits (N, K)`` and, per
    photo, what identifies it (``{"file": ...}`` or the generator's factors)."""

    name: str
    pixels: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    descriptions: list[dict[str, Any]]


class Predictor:
    """The checkpoint's network in eval mode: logits and class-activation maps of letterboxed photos."""

    def __init__(self, model_dir: Path) -> None:
        checkpoint = load_checkpoint(model_dir / "triage_checkpoint.npz")
        self.config = checkpoint.config
        self.net = load_numpy_state(build_network(checkpoint.config), checkpoint.weights).eval()
        self.head = [m for m in self.net.modules() if isinstance(m, torch.nn.Linear)][-1]

    def logits(self, pixels: np.ndarray, batch: int = 128) -> np.ndarray:
        """``uint8 (N, S, S, 3)`` -> float64 ``(N, K)``."""
        out = []
        with torch.inference_mode():
            for i in range(0, len(pixels), batch):
                x = torch.from_numpy(normalize(pixels[i : i + batch], self.config.preprocessing))
                out.append(self.net(x).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))

    def cams(self, pixels: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Each photo's class-activation map for ``classes[i]``: the last stage's map weighted by the head's row,
        ``(N, H, W)``, each cell's share of the logit (global average pooling) or its weighted response (max)."""
        with torch.inference_mode():
            x = torch.from_numpy(normalize(pixels, self.config.preprocessing))
            _, maps = self.net.forward_stages(x)
            last = list(maps.values())[-1].double()  # (N, C, H, W)
            rows = self.head.weight.double()[torch.from_numpy(classes)]  # (N, C)
            cam = torch.einsum("nchw,nc->nhw", last, rows)
            if self.config.global_pool == "avg":
                cam = cam / (last.shape[2] * last.shape[3])
        return cam.numpy()


def _generated(
    card: dict[str, Any], name: str, spec: Preprocessing
) -> tuple[ArrayDataset | None, list[dict[str, Any]]]:
    """The split as training generated it (``None`` when ``spec`` is None) and each photo's generator factors."""
    from model.synth import sample_factors

    n, seed = int(card["training"]["data"]["splits"][name]), int(card["training"]["seed"])
    factors = [
        sample_factors(int(s), CLASSES[i % len(CLASSES)], name) for i, s in enumerate(split_seeds(name, n, seed))
    ]
    return (None if spec is None else synthetic_split(name, n, spec, seed=seed)), factors


def _held_out_folder(card: dict[str, Any], spec: Preprocessing) -> ArrayDataset:
    """The folder's test part, split as training split it (``model.train``: 70 / 15 / 15, by class, seeded)."""
    full, _ = image_folder(Path(card["training"]["data"]["root"]), spec)
    return stratified_split(full, FOLDER_FRACTIONS, int(card["training"]["seed"]))[2]


def evaluate(
    predictor: Predictor, card: dict[str, Any], splits: dict[str, ArrayDataset] | None = None
) -> list[SplitPredictions]:
    """Predictions on every split the card reports metrics for (test, shifted, real), regenerated from the card's
    training data description unless ``splits`` passes them (training has them in memory)."""
    spec = predictor.config.preprocessing
    splits = splits or {}
    folder = card["training"]["data"]["kind"] == "image_folder"
    out = []
    for name in EVALUATED_SPLITS:
        if name not in card.get("metrics", {}):
            continue
        data = splits.get(name)
        if folder:
            data = _held_out_folder(card, spec) if data is None else data
            descriptions = [{"file": f} for f in data.names or ()]
        else:
            generated, descriptions = _generated(card, name, None if data is not None else spec)
            data = generated if data is None else data
        out.append(SplitPredictions(name, data.pixels, data.labels, predictor.logits(data.pixels), descriptions))
    return out
