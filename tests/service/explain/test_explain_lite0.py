"""Explanations of an EfficientNet-Lite0 model, in-process, on a random Lite0 exported at 96 px: its convolutions as
read from the ONNX graph against the checkpoint's folded ones, the exact class-activation map on the head,
receptive-field boxes against ``model.receptive_field`` on odd photo sizes, effective receptive fields against torch
autograd, the stage notes, an int8 (QDQ) file, and ``triage explain``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.card import CARD_NAME, ONNX_NAME, read_card, sha256_file, write_card
from model.config import NetworkConfig
from model.numpy_efficientnet import NumpyEfficientNetLite
from model.preprocess import letterbox_geometry, normalize
from model.receptive_field import cell_field_in_photo, stage_fields
from service.explain.erf import erf_cell, flat_reason
from service.explain.explainer import Explainer
from service.explain.onnx_weights import OnnxFormatError, read_onnx, unit_convs
from service.explain.stages import stage_notes
from service.inference.engine import TriageEngine
from service.inference.intake import IntakeLimits, read_photo
from tests.conftest import LITE0_TEST_SIZE
from tests.lite0_nets import calibrated_lite0, lite0_config
from tests.service.explain.test_explain import explain
from triage_cli.explain_file import explain_file

CONFIG = lite0_config(LITE0_TEST_SIZE)  # the fixture model's architecture and input size
STAGES = CONFIG.stage_names


@pytest.fixture(scope="module")
def model(random_lite0_model_dir: Path) -> tuple[TriageEngine, Explainer]:
    onnx_path = random_lite0_model_dir / "triage.onnx"
    return TriageEngine(onnx_path, device="cpu"), Explainer.from_onnx(onnx_path)


@pytest.fixture(scope="module")
def torch_net() -> torch.nn.Module:
    """The fixture model's own network, rebuilt from its seed."""
    return calibrated_lite0(LITE0_TEST_SIZE, seed=0)


def analytic_box(stage: str, y: int, x: int, width: int, height: int) -> list[int]:
    geo = letterbox_geometry(width, height, LITE0_TEST_SIZE)
    c = cell_field_in_photo(CONFIG, stage, y, x, geo).clipped
    return [c.x0, c.y0, c.x1, c.y1]


def test_the_explainer_reads_every_unit_of_the_backbone_folded(
    model: tuple[TriageEngine, Explainer], torch_net: torch.nn.Module
) -> None:
    """Each of the 49 ONNX convolutions is its unit's conv with the checkpoint's batch-norm folded in."""
    _, explainer = model
    weights = {k: v.detach().numpy() for k, v in torch_net.state_dict().items()}
    reference = NumpyEfficientNetLite.from_weights(CONFIG, weights, dtype=np.float64)
    units = [unit for _, unit in CONFIG.backbone.units()]  # type: ignore[union-attr]
    assert [c.name for c in explainer._convs] == [u.name for u in units] and len(units) == 49
    for conv in explainer._convs:
        expected = reference.units[conv.name]
        np.testing.assert_allclose(conv.weight, expected.w, rtol=1e-5, atol=1e-6, err_msg=conv.name)
        np.testing.assert_allclose(conv.bias, expected.b, rtol=1e-5, atol=1e-6, err_msg=conv.name)
    assert explainer.cam_stage == "head" and explainer.pool == "avg"
    np.testing.assert_array_equal(explainer.head_w, weights["classifier.weight"])


def test_a_graph_whose_convolutions_are_not_the_backbones_is_refused(random_lite0_model_dir: Path) -> None:
    graph = read_onnx(random_lite0_model_dir / "triage.onnx")
    backbone = CONFIG.backbone
    assert backbone is not None
    shorter = replace(backbone, blocks=backbone.blocks[:-1])  # the last block has three convolutions
    with pytest.raises(OnnxFormatError, match=f"the graph has 49 convolutions; efficientnet_lite0 has {49 - 3}$"):
        unit_convs(graph, shorter)
    convs = [i for i, node in enumerate(graph.nodes) if node.op_type == "Conv"]
    nodes = list(graph.nodes)
    nodes[convs[1]], nodes[convs[2]] = nodes[convs[2]], nodes[convs[1]]  # the same convolutions, two swapped
    with pytest.raises(OnnxFormatError, match=r"blocks\.0\.depthwise"):
        unit_convs(replace(graph, nodes=tuple(nodes)), backbone)


def test_cam_on_the_head_is_exact(model: tuple[TriageEngine, Explainer], kit: Any) -> None:
    result = explain(model, kit.encode(kit.scene(400, 300, seed=3), "JPEG"))
    cam = result["cam"]
    head = stage_fields(CONFIG)["head"]
    values = np.array(cam["values"])
    assert cam["layer"] == "head" and values.shape == head.out_size == (3, 3)
    assert cam["pool"] == "avg" and cam["sum_plus_bias"] == pytest.approx(cam["logit"], abs=1e-4)
    assert cam["class"] == max(result["probabilities"], key=result["probabilities"].get)
    py, px = cam["peak"]["cell"]
    assert cam["peak"]["box"] == analytic_box("head", py, px, 400, 300)
    assert "global average pool" in cam["about"]


@pytest.mark.parametrize("size", ((333, 517), (641, 257), (96, 96)), ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_lite0_box_is_the_analytic_one_and_inside_the_photo(
    model: tuple[TriageEngine, Explainer], kit: Any, size: tuple[int, int]
) -> None:
    width, height = size
    result = explain(model, kit.encode(kit.scene(width, height, seed=1), "PNG"), channels=2)
    assert [layer["name"] for layer in result["layers"]] == list(STAGES)
    for layer in result["layers"]:
        name = layer["name"]
        _, h, w = layer["shape"]
        assert (h, w) == stage_fields(CONFIG)[name].out_size
        xs, ys = layer["cell_boxes"]["x"], layer["cell_boxes"]["y"]
        for y in range(h):
            for x in range(w):
                box = [xs[x][0], ys[y][0], xs[x][1], ys[y][1]]
                assert box == analytic_box(name, y, x, width, height), (name, y, x)
                assert 0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height
        top = layer["argmax"]
        assert top["box"] == analytic_box(name, *top["cell"], width, height)
        x0, y0, x1, y1 = top["footprint"]
        assert top["box"][0] <= x0 <= x1 <= top["box"][2] and top["box"][1] <= y0 <= y1 <= top["box"][3]


def test_effective_receptive_fields_are_torchs_input_gradients(
    model: tuple[TriageEngine, Explainer], torch_net: torch.nn.Module, kit: Any
) -> None:
    """The NumPy Lite0 engine built from the ONNX file differentiates each stage's argmax cell as torch autograd
    does on the checkpoint; the gradient stays in the analytic box."""
    engine, explainer = model
    data = kit.encode(kit.scene(320, 240, seed=5), "PNG")
    result = explain(model, data, erf=True, channels=1)
    served = max(float(np.abs(layer["argmax"]["value"])) for layer in result["layers"])
    assert result["erf_check"]["numpy_onnx_max_abs_diff"] < 1e-3 * max(served, 1.0)  # float32 through 49 convs
    prepared, _ = read_photo(data, engine.preprocessing, IntakeLimits())
    trace = explainer.erf_engine.trace(prepared.tensor)
    x = torch.from_numpy(prepared.tensor[None].copy()).requires_grad_(True)
    _, maps = torch_net.forward_stages(x)
    moved = 0
    for layer in result["layers"]:
        name, erf = layer["name"], layer["erf"]
        channel, (y, x_) = erf["channel"], erf["cell"]
        assert channel == layer["argmax"]["channel"]
        if erf["cell_chosen_because"] is None:
            assert [y, x_] == layer["argmax"]["cell"], name
        else:  # the argmax sits at the ReLU6 cap: the channel's strongest cell below it
            moved += 1
            values = trace.maps[name][0, channel]
            assert name in ("stem", "head") and layer["argmax"]["value"] >= 6 > erf["value"] > 0
            assert erf["value"] == values[y, x_] == values[values < 6].max()
        (expected,) = torch.autograd.grad(maps[name][0, channel, y, x_], x, retain_graph=True)
        got = explainer.erf_engine.cell_gradient(trace, name, y, x_, channel)
        scale = float(expected.abs().max()) + 1e-12
        np.testing.assert_allclose(got, expected[0].numpy(), atol=1e-4 * scale, err_msg=name)
        if erf["mass_in_box"] is None:
            assert float(expected.abs().max()) == 0.0 and erf["flat_because"], name
        else:
            assert erf["mass_in_box"] == pytest.approx(1.0, abs=1e-9) and erf["flat_because"] is None, name
            assert erf["radius90"] <= erf["box_half_side"] == stage_fields(CONFIG)[name].size / 2
    assert moved >= 1  # this model's head peaks at the cap (as the pretrained one's stem and head do)


def test_the_erf_cell_leaves_the_relu6_cap_for_the_strongest_cell_below_it() -> None:
    capped = np.array([[6.0, 1.0, 6.0], [5.5, 0.0, 2.0]])
    sees = np.ones_like(capped, dtype=bool)
    y, x, why = erf_cell(capped, sees, 0, 0, "ReLU6")
    assert (y, x) == (1, 0) and "capped at 6" in (why or "")
    hidden = sees.copy()
    hidden[1, 0] = False  # a cell in the letterbox padding is never chosen
    assert erf_cell(capped, hidden, 0, 0, "ReLU6")[:2] == (1, 2)
    assert erf_cell(capped, sees, 0, 0, "ReLU") == (0, 0, None)  # a plain ReLU has no cap
    assert erf_cell(np.full((2, 2), 6.0), np.ones((2, 2), bool), 0, 1, "ReLU6") == (0, 1, None)  # nothing below
    assert flat_reason(0.0, "ReLU6") == "is 0: its ReLU6 is off" and "saturated" in flat_reason(6.0, "ReLU6")


def test_stage_notes_say_what_each_stage_is() -> None:
    """EfficientNet-Lite0's published layout (repeats, kernel, stride, expand, channels) = (1,3,1,1,16) (2,3,2,6,24)
    (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192) (1,3,1,6,320), a 3x3/2 stem and a 1x1 head to 1280; the
    scratch network strides only in stage1."""
    lite = stage_notes(NetworkConfig(network="efficientnet_lite0"))
    assert list(lite) == ["stem", *(f"stage{i}" for i in range(1, 8)), "head"]
    assert lite["stem"].startswith("conv 3\u00d73 stride 2")
    assert lite["stage1"].startswith("block 0:") and "expand" not in lite["stage1"]
    assert "blocks 1\u20132" in lite["stage2"] and "stride 2 in block 1" in lite["stage2"]
    assert "5\u00d75 depthwise (stride 2 in block 3)" in lite["stage3"]
    assert "blocks 8\u201310" in lite["stage5"] and "stride" not in lite["stage5"]
    assert "blocks 11\u201314" in lite["stage6"] and "blocks 12, 13, 14 add their input" in lite["stage6"]
    assert lite["stage7"].startswith("block 15:") and "add" not in lite["stage7"]
    assert "1280 channels" in lite["head"] and "global average pool" in lite["head"]
    scratch = stage_notes(NetworkConfig())
    assert [name for name, note in scratch.items() if "stride" in note] == ["stage1"]
    assert "global average pool" in scratch[NetworkConfig().stage_names[-1]]


def test_a_quantised_lite0_is_explained_with_its_dequantised_weights(
    random_lite0_model_dir: Path, kit: Any, tmp_path: Path
) -> None:
    """``export.quantize`` on a Lite0 file: the quantiser folds ReLU6 into the activation ranges (no ``Clip``
    left); the explainer still finds all 49 convolutions, within half a quantisation step of the fp32 ones, and its
    class-activation map adds up to the int8 model's own head on its own head map."""
    import onnxruntime as ort

    from export.quantize import quantize_model

    rng = np.random.default_rng(0)
    photos = np.kron(rng.integers(0, 256, (8, 12, 12, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)
    int8 = quantize_model(random_lite0_model_dir / "triage.onnx", tmp_path / "int8.onnx", photos, CONFIG.preprocessing)
    assert "Clip" not in {node.op_type for node in read_onnx(int8).nodes}
    fp32, quantised = Explainer.from_onnx(random_lite0_model_dir / "triage.onnx"), Explainer.from_onnx(int8)
    assert quantised.stages == STAGES and (quantised.cam_stage, quantised.pool) == ("head", "avg")
    for exact, read in [(fp32.head_w, quantised.head_w)] + [
        (a.weight, b.weight) for a, b in zip(fp32._convs, quantised._convs, strict=True)
    ]:
        step = np.abs(exact).max(axis=tuple(range(1, exact.ndim)), keepdims=True) / 127
        assert np.all(np.abs(read - exact) <= step / 2 + 1e-6)
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    # photos like the calibration ones (the int8 activations clip outside the calibrated ranges)
    x = normalize(
        np.kron(rng.integers(0, 256, (2, 12, 12, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8), CONFIG.preprocessing
    )
    logits, head = session.run(["logits", "head"], {"input": x})
    pooled = head.mean(axis=(2, 3)) @ quantised.head_w.T + quantised.head_b
    np.testing.assert_allclose(pooled, logits, atol=0.05 * np.abs(logits).max() + 1e-3)
    engine = served_engine(random_lite0_model_dir, int8, tmp_path)
    result = explain((engine, quantised), kit.encode(kit.scene(), "PNG"), erf=True)
    assert [layer["name"] for layer in result["layers"]] == list(STAGES)
    cam = result["cam"]
    # exact up to the int8 rounding of the pooled features and of the logits themselves
    assert cam["layer"] == "head" and cam["sum_plus_bias"] == pytest.approx(cam["logit"], abs=0.05 * abs(cam["logit"]))
    assert all(layer["erf"]["mass_in_box"] in (None, pytest.approx(1.0)) for layer in result["layers"])


def served_engine(model_dir: Path, onnx_file: Path, tmp_path: Path) -> TriageEngine:
    """An engine serving ``onnx_file`` from a copy of ``model_dir`` whose card records that file's sha256."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(onnx_file, served / ONNX_NAME)
    card = read_card(model_dir / CARD_NAME)
    card["artifacts"] = {ONNX_NAME: {"sha256": sha256_file(served / ONNX_NAME)}}
    write_card(served / CARD_NAME, card)
    return TriageEngine(served / ONNX_NAME, device="cpu")


def test_a_float16_lite0_is_explained(random_lite0_model_dir: Path, kit: Any, tmp_path: Path) -> None:
    """``export.half_precision``'s file computes in float16 behind float32 ``Cast`` nodes at its inputs and
    outputs: the explainer finds the head map behind them and the float16 weights, and explains a photo."""
    from export.half_precision import export_fp16

    fp16 = export_fp16(random_lite0_model_dir / "triage.onnx", tmp_path / "fp16.onnx")
    assert "Cast" in {node.op_type for node in read_onnx(fp16).nodes}
    explainer = Explainer.from_onnx(fp16)
    assert explainer.cam_stage == "head" and explainer.stages == STAGES and len(explainer._convs) == 49
    assert {c.weight.dtype for c in explainer._convs} == {np.dtype(np.float16)}
    result = explain((served_engine(random_lite0_model_dir, fp16, tmp_path), explainer), kit.encode(kit.scene(), "PNG"))
    cam = result["cam"]  # float16 maps and logits: exact to float16 rounding
    assert cam["layer"] == "head" and cam["sum_plus_bias"] == pytest.approx(cam["logit"], abs=1e-2 * abs(cam["logit"]))
    assert [layer["name"] for layer in result["layers"]] == list(STAGES)


def test_explain_cli_on_a_lite0_model(random_lite0_model_dir: Path, kit: Any, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(kit.encode(kit.scene(), "JPEG"))
    assert explain_file(photo, tmp_path / "out", model=random_lite0_model_dir / "triage.onnx", channels=1) == 0
    written = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert written["network"]["name"] == "efficientnet_lite0" and written["network"]["stages"] == list(STAGES)
    assert {f"{name}_erf.png" for name in STAGES} <= {p.name for p in (tmp_path / "out").iterdir()}


def test_an_unfamiliarity_output_is_not_a_stage(random_lite0_model_dir: Path, tmp_path: Path) -> None:
    """A model that abstains also outputs ``unfamiliarity`` ``(N,)`` computed from the head map (its own pooling
    and matrix products, no convolution): the explainer's stages, head and convolution chain ignore it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from model.familiarity import UNFAMILIARITY_NAME

    model = onnx.load(str(random_lite0_model_dir / "triage.onnx"))
    axes = numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "unfamiliarity_axes")
    model.graph.initializer.append(axes)
    model.graph.node.append(
        helper.make_node("ReduceMean", ["head", "unfamiliarity_axes"], [UNFAMILIARITY_NAME], keepdims=0)
    )
    model.graph.output.append(helper.make_tensor_value_info(UNFAMILIARITY_NAME, TensorProto.FLOAT, ["batch"]))
    path = tmp_path / "abstaining.onnx"
    onnx.save(model, str(path))
    explainer = Explainer.from_onnx(path)
    assert read_onnx(path).outputs[-1] == UNFAMILIARITY_NAME
    assert explainer.stages == STAGES and explainer.cam_stage == "head" and len(explainer._convs) == 49
