"""The exported familiarity head computes what model.familiarity computes, in PyTorch and in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.familiarity_head import FamiliarityHead
from model.familiarity import fit_familiarity, pooled_features


def test_head_matches_numpy_in_torch_and_onnx_runtime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(300, 16, 4, 5)).astype(np.float32) * rng.uniform(0.1, 3, size=(1, 16, 1, 1))
    labels = rng.integers(0, 2, size=300)
    familiarity = fit_familiarity(pooled_features(maps), labels, rank=6)
    probe = (rng.normal(size=(7, 16, 4, 5)) * 2).astype(np.float32)
    expected = familiarity.distances(pooled_features(probe))
    head = FamiliarityHead(familiarity).eval()
    with torch.inference_mode():
        got = head(torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    path = tmp_path / "head.onnx"
    torch.onnx.export(
        head,
        (torch.from_numpy(probe),),
        str(path),
        input_names=["map"],
        output_names=["d"],
        dynamic_axes={"map": {0: "batch"}, "d": {0: "batch"}},
        opset_version=18,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_d,) = session.run(None, {"map": probe[:3]})
    np.testing.assert_allclose(onnx_d, expected[:3], rtol=1e-4)
