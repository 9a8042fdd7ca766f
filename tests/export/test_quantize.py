"""int8 QDQ quantisation: the quantised graph really holds int8 weights and stays close to the fp32 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.quantize import format_table, latency_ms, quantize_model
from model.config import Preprocessing
from model.preprocess import normalize


def test_quantised_model_has_int8_weights_and_tracks_fp32(random_model_dir: Path, tmp_path: Path) -> None:
    spec = Preprocessing()
    rng = np.random.default_rng(0)
    # Smooth random photos: blocky colour fields, so activations look like a photo's rather than white noise.
    photos = np.kron(rng.integers(0, 256, (24, 16, 16, 3)), np.ones((1, 16, 16, 1))).astype(np.uint8)
    out = quantize_model(random_model_dir / "triage.onnx", tmp_path / "int8.onnx", photos[:16], spec)

    graph = onnx.load(str(out)).graph
    assert any(node.op_type == "DequantizeLinear" for node in graph.node)
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)

    x = normalize(photos[16:], spec)
    fp32 = ort.InferenceSession(str(random_model_dir / "triage.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    a, b = fp32.run(["logits"], {"input": x})[0], int8.run(["logits"], {"input": x})[0]
    spread = np.abs(a).max()
    assert np.abs(a - b).max() <= 0.1 * spread, (a, b)
    assert latency_ms(int8, x[:1], repeat=2) > 0


def test_table_lists_both_models() -> None:
    row = {"accuracy": 0.9, "batch1_ms": 1.0, "batch8_ms": 5.0, "bytes": 2_000_000}
    table = format_table({"results": {"fp32": row, "int8": {**row, "accuracy": 0.89}}})
    assert "| fp32 | 90.00% | 1.00 | 5.00 | 2.00 |" in table and "| int8 | 89.00% |" in table


def test_the_folder_holds_the_int8_file_exactly_when_the_card_lists_it(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that ships writes file and card entry together; a later run that does not ship withdraws both (it
    used to delete the file and keep the card's entry for it). ``--no-card`` changes nothing."""
    import shutil

    from export import quantize
    from model.card import CARD_NAME, read_card, sha256_file

    folder = tmp_path / "model"
    shutil.copytree(random_model_dir, folder)
    args = ["--model", str(folder / "triage.onnx"), "--n-test", "8", "--n-calibration", "8", "--repeat", "1"]
    int8 = folder / quantize.INT8_NAME
    monkeypatch.setattr(quantize, "accuracy", lambda *a: 0.5)  # no loss either way: speed decides

    def timed(int8_ms: float) -> None:
        monkeypatch.setattr(
            quantize, "latency_ms", lambda s, x, r: int8_ms if "int8" in Path(s._model_path).name else 2.0
        )

    timed(1.0)
    assert quantize.main(args) == 0
    card = read_card(folder / CARD_NAME)
    assert card["quantization"]["shipped"] and card["artifacts"][quantize.INT8_NAME]["sha256"] == sha256_file(int8)
    timed(3.0)
    assert quantize.main([*args, "--no-card"]) == 0
    assert read_card(folder / CARD_NAME) == card and int8.exists()
    assert quantize.main(args) == 0
    card = read_card(folder / CARD_NAME)
    assert not card["quantization"]["shipped"] and quantize.INT8_NAME not in card["artifacts"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in random_model_dir.iterdir())


def test_the_pretrained_backbone_quantises_every_convolution_depthwise_included(tmp_path: Path) -> None:
    """All 49 convolutions of EfficientNet-Lite0 (ImageNet weights, 96 px) read int8 weights through a
    DequantizeLinear, and every stage map of the int8 model tracks the float32 one."""
    from export.onnx_export import export_onnx
    from model.config import PRETRAINED_MEAN, PRETRAINED_STD, NetworkConfig
    from model.network import build_network

    spec = Preprocessing(size=96, mean=PRETRAINED_MEAN, std=PRETRAINED_STD)
    config = NetworkConfig(network="efficientnet_lite0", preprocessing=spec)
    export_onnx(build_network(config, seed=0, pretrained=True).eval(), tmp_path / "fp32.onnx", {})
    rng = np.random.default_rng(0)
    photos = np.kron(rng.integers(0, 256, (24, 6, 6, 3)), np.ones((1, 16, 16, 1))).astype(np.uint8)
    out = quantize_model(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", photos[:16], spec)

    graph = onnx.load(str(out)).graph
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    dequantised = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == len(config.layers()) == 49
    assert all(dequantised.get(conv.input[1]) in int8 for conv in convs)
    groups = [next((a.i for a in conv.attribute if a.name == "group"), 1) for conv in convs]
    assert sum(g > 1 for g in groups) == 16  # the depthwise ones

    x = normalize(photos[16:], spec)
    names = list(config.stage_names)
    a = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(names, {"input": x})
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(names, {"input": x})
    for name, fp32, quantised in zip(names, a, b, strict=True):
        assert np.corrcoef(fp32.ravel(), quantised.ravel())[0, 1] > 0.97, name
