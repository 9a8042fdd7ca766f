"""The model file as explanations read it: the graph read with ``onnx`` against what ONNX Runtime sees in it, the
head the class-activation map uses, int8 files, and an explanation run with torch not importable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.config import NetworkConfig
from service.explain.onnx_weights import OnnxFormatError, head_weights, read_onnx
from service.inference.engine import TriageEngine
from tests.service.test_no_torch import BLOCK_TORCH

LAST = NetworkConfig().stage_names[-1]


def test_onnx_reader_sees_what_onnx_runtime_runs(random_model_dir: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(random_model_dir / "triage.onnx"), providers=["CPUExecutionProvider"])
    graph = read_onnx(random_model_dir / "triage.onnx")
    assert graph.outputs == tuple(o.name for o in session.get_outputs())
    assert graph.metadata == session.get_modelmeta().custom_metadata_map
    assert graph.initializers and all(a.dtype == np.float32 for a in graph.initializers.values())
    assert {node.op_type for node in graph.nodes} >= {"Conv", "Relu", "Gemm"}


def test_onnx_reader_follows_identity_and_constant_nodes(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([0.5, -1.5], dtype=np.float32)
    nodes = [
        helper.make_node("Identity", ["w_stored"], ["w_alias"]),
        helper.make_node("Constant", [], ["b_const"], value=numpy_helper.from_array(b)),
        helper.make_node("ReduceMean", ["stage1"], ["pooled"], keepdims=0, axes=[2, 3]),
        helper.make_node("Gemm", ["pooled", "w_alias", "b_const"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("stage1", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w_stored")],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    weight, bias, last, pool = head_weights(read_onnx(path))
    np.testing.assert_array_equal(weight, w)
    np.testing.assert_array_equal(bias, b)
    assert last == "stage1" and pool == "avg"
    path.write_bytes(b"\x0a\xff\xff\xff")  # a length running past the end of the file
    with pytest.raises(OnnxFormatError, match="not an ONNX model"):
        read_onnx(path)
    path.write_bytes(b"")
    with pytest.raises(OnnxFormatError, match="holds no graph"):
        read_onnx(path)


def test_weights_stored_outside_the_file_are_refused(random_model_dir: Path, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(random_model_dir / "triage.onnx"))
    onnx.save(model, str(tmp_path / "split.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    with pytest.raises(OnnxFormatError, match="stored outside the file"):
        read_onnx(tmp_path / "split.onnx")


def test_head_weights_are_the_trained_heads(random_model_dir: Path) -> None:
    from model.network import build_network

    weight, bias, last, pool = head_weights(read_onnx(random_model_dir / "triage.onnx"))
    net = build_network(seed=0)  # the fixture's network
    assert last == LAST and pool == NetworkConfig().global_pool == "avg"
    np.testing.assert_array_equal(weight, net.head.weight.detach().numpy())
    np.testing.assert_array_equal(bias, net.head.bias.detach().numpy())
    engine = TriageEngine(random_model_dir / "triage.onnx", device="cpu")
    x = np.random.default_rng(0).normal(size=(3, 3, 256, 256)).astype(np.float32)
    out = engine.infer(x, ("logits", LAST))
    np.testing.assert_allclose(out[LAST].mean(axis=(2, 3)) @ weight.T + bias, out["logits"], atol=1e-5)


def test_a_quantised_model_is_read_dequantised(random_model_dir: Path, tmp_path: Path) -> None:
    """An int8 QDQ file (``export.quantize``): its weights come back within half a quantisation step of the fp32
    file's, found through the quantise-dequantise pairs around every activation, and it explains a photo."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from export.quantize import quantize_model
    from model.config import Preprocessing
    from service.explain.explainer import Explainer

    rng = np.random.default_rng(0)
    photos = np.kron(rng.integers(0, 256, (8, 16, 16, 3)), np.ones((1, 16, 16, 1))).astype(np.uint8)
    int8 = quantize_model(random_model_dir / "triage.onnx", tmp_path / "int8.onnx", photos, Preprocessing())
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer}
    graph = read_onnx(int8)
    for name, array in stored.items():  # int8 weights, uint8 zero points, int32 biases read as stored
        assert graph.initializers[name].dtype == array.dtype and np.array_equal(graph.initializers[name], array)
    assert {a.dtype for a in stored.values()} >= {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)}

    fp32, quantised = Explainer.from_onnx(random_model_dir / "triage.onnx"), Explainer.from_onnx(int8)
    assert (quantised.cam_stage, quantised.pool) == (fp32.cam_stage, fp32.pool) == (LAST, "avg")
    convs = zip(fp32._convs, quantised._convs, strict=True)
    pairs = [(fp32.head_w, quantised.head_w)] + [(a.weight, b.weight) for a, b in convs]
    for exact, read in pairs:
        step = np.abs(exact).max(axis=tuple(range(1, exact.ndim)), keepdims=True) / 127  # per output channel
        assert np.all(np.abs(read - exact) <= step / 2 + 1e-6)
        assert not np.array_equal(read, exact)  # really the dequantised weights, not the fp32 file's
    assert [c.stage for c in quantised._convs] == list(NetworkConfig().stage_names)
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(2, 3, 256, 256)).astype(np.float32)
    logits, last = session.run(["logits", LAST], {"input": x})
    pooled = last.mean(axis=(2, 3)) @ quantised.head_w.T + quantised.head_b  # the CAM's head on int8 maps
    np.testing.assert_allclose(pooled, logits, atol=0.05 * np.abs(logits).max() + 1e-3)


NO_TORCH = (
    BLOCK_TORCH
    + """
from pathlib import Path

import service.inference.explain_api, service.http.page
from triage_cli.explain_file import explain_file
raise SystemExit(explain_file(Path(sys.argv[1]), Path(sys.argv[2]), model=Path(sys.argv[3]), erf=True, channels=1))
"""
)


def test_explanations_need_no_torch(random_model_dir: Path, kit: Any, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(kit.encode(kit.scene(), "JPEG"))
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(photo), str(tmp_path / "out"), str(random_model_dir / "triage.onnx")],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        timeout=600,  # seconds on a quiet machine, minutes on a loaded one; a hang still fails
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert (tmp_path / "out" / "explanation.json").exists()
