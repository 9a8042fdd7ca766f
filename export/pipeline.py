"""``triage export``: checkpoint -> checked ONNX file; the model card gains its hash and the layer table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from export.familiarity_head import FamiliarityHead
from export.onnx_export import OPSET, export_onnx, output_names
from model.card import CARD_NAME, ONNX_NAME, read_card, sha256_file, write_card
from model.checkpoint import load_checkpoint
from model.config import INPUT_NAME, LOGITS_NAME
from model.familiarity import UNFAMILIARITY_NAME, Familiarity
from model.network import Network, build_network, load_numpy_state


def load_torch_model(checkpoint: Path) -> Network:
    """The checkpoint's network in PyTorch, eval mode."""
    ckpt = load_checkpoint(checkpoint)
    return load_numpy_state(build_network(ckpt.config), ckpt.weights).eval()


def layer_table(net: Network) -> list[dict[str, Any]]:
    """Per stage: output shape at the model's input size and the receptive field (size, jump, start)."""
    from model.receptive_field import table

    return [asdict(row) for row in table(net.config)]


def max_logit_difference(net: Network, onnx_path: Path, batch: np.ndarray) -> float:
    """max |logits(PyTorch) - logits(ONNX Runtime CPU)| on ``batch`` ``(N, 3, S, S)``."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run([LOGITS_NAME], {INPUT_NAME: batch})
    with torch.inference_mode():
        torch_logits = net(torch.from_numpy(batch)).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())


def max_relative_distance_difference(
    net: Network, familiarity: Familiarity, onnx_path: Path, batch: np.ndarray
) -> float:
    """max |d(ONNX Runtime CPU) - d(PyTorch head)| / threshold on ``batch`` ``(N, 3, S, S)``: the familiarity
    distances measured in units of the threshold they are compared with."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_d,) = session.run([UNFAMILIARITY_NAME], {INPUT_NAME: batch})
    with torch.inference_mode():
        _, maps = net.forward_stages(torch.from_numpy(batch))
        torch_d = FamiliarityHead(familiarity)(maps[net.config.stage_names[-1]]).numpy()
    return float(np.abs(onnx_d.astype(np.float64) - torch_d).max() / familiarity.threshold)


class ExportError(ValueError):
    """The checkpoint has no model card of its own to export with."""


def checkpoint_card(checkpoint: Path, out: Path) -> dict[str, Any]:
    """The model card written with ``checkpoint`` (its calibration, metrics and preprocessing): ``out``'s card if it
    records this checkpoint's sha256, else the one beside the checkpoint if that does. A card describing another
    checkpoint is never used: the ONNX file would carry another model's calibration."""
    digest = sha256_file(checkpoint)
    looked = []
    for path in dict.fromkeys((out / CARD_NAME, checkpoint.parent / CARD_NAME)):
        if path.exists():
            card = read_card(path)
            if any(entry.get("sha256") == digest for entry in card.get("artifacts", {}).values()):
                return card
        looked.append(str(path))
    raise ExportError(f"no model card records {checkpoint}'s sha256 {digest[:12]}... (looked at {', '.join(looked)})")


def export_artifacts(checkpoint: Path, out: Path) -> dict[str, Any]:
    """Write ``out/triage.onnx`` from ``checkpoint`` and record it in ``out/model_card.json``."""
    card = checkpoint_card(checkpoint, out)
    familiarity = load_checkpoint(checkpoint).familiarity
    if (familiarity is None) != ("familiarity" not in card) or (
        familiarity is not None and card["familiarity"]["threshold"] != familiarity.threshold
    ):
        raise ExportError(f"{checkpoint}'s familiarity parameters and its model card's familiarity disagree")
    out.mkdir(parents=True, exist_ok=True)
    net = load_torch_model(checkpoint)
    onnx_path = out / ONNX_NAME
    metadata = {
        "name": card["name"],
        "version": card["version"],
        "calibration": json.dumps(card["calibration"], sort_keys=True),
    }
    export_onnx(net, onnx_path, metadata, familiarity)
    size = net.config.preprocessing.size
    probe = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
    diff = max_logit_difference(net, onnx_path, probe)
    if diff > 1e-4:
        raise RuntimeError(f"exported ONNX disagrees with PyTorch: max |logit diff| {diff:.3g} > 1e-4")
    if familiarity is not None:
        distance_diff = max_relative_distance_difference(net, familiarity, onnx_path, probe)
        if distance_diff > 1e-4:
            raise RuntimeError(
                f"exported ONNX disagrees with PyTorch: familiarity distances differ by {distance_diff:.3g} of the "
                "threshold (> 1e-4)"
            )
    card["artifacts"][ONNX_NAME] = {
        "sha256": sha256_file(onnx_path),
        "bytes": onnx_path.stat().st_size,
        "opset": OPSET,
        "outputs": output_names(net.config, familiarity),
    }
    card["layers"] = layer_table(net)
    write_card(out / CARD_NAME, card)
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), max |logit diff| vs PyTorch {diff:.2e}")
    return card
