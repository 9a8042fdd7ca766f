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


def test_head_stays_float32_accurate_when_training_varied_along_few_directions() -> None:
    """A trained network's features vary along a few directions and hardly at all along the rest, so ``1 / sigma^2``
    is large and the distance is a small difference of large terms in ``Familiarity.distances``'s form; the head's
    float32 result must still be within float32 rounding of the float64 distance."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    scales = np.concatenate([np.full(8, 10.0), np.full(56, 0.01)])  # 8 strong directions, 56 nearly silent ones
    features = (rng.normal(size=(400, 64)) * scales) @ basis.T + 5.0
    labels = rng.integers(0, 2, size=400)
    familiarity = fit_familiarity(features, labels, rank=8)
    assert familiarity.inv_residual > 1e3 * float(np.max(familiarity.weights + familiarity.inv_residual))
    probe = ((rng.normal(size=(6, 64)) * scales * np.array([[1], [1], [2], [3], [5], [10]])) @ basis.T + 5.0).astype(
        np.float32
    )
    expected = familiarity.distances(probe.astype(np.float64))
    with torch.inference_mode():
        got = FamiliarityHead(familiarity)(torch.from_numpy(probe[:, :, None, None])).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_the_head_leaves_every_stage_output_with_the_node_that_computes_it(tmp_path: Path) -> None:
    """Explanations read each stage's convolution from the node producing the stage output; the head's nodes must
    read the last stage, never take over its name (a cast of it once did)."""
    import onnx

    from export.onnx_export import export_onnx, output_names
    from model.network import build_network

    net = build_network(seed=0).eval()
    rng = np.random.default_rng(2)
    channels = net.config.stages[-1].channels
    familiarity = fit_familiarity(rng.normal(size=(80, channels)), rng.integers(0, 2, 80), rank=4)
    producers = {}
    for name, head in (("plain", None), ("abstaining", familiarity)):
        graph = export_onnx(net, tmp_path / f"{name}.onnx", {}, head).graph
        assert [o.name for o in graph.output] == output_names(net.config, head)
        producers[name] = {out: node.op_type for node in graph.node for out in node.output}
    for stage in net.config.stage_names:
        assert producers["abstaining"][stage] == producers["plain"][stage], stage
    assert onnx.checker.check_model(onnx.load(str(tmp_path / "abstaining.onnx"))) is None
