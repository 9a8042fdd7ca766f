"""Four-engine parity on a randomly initialised EfficientNet-Lite0 (64 px, calibrated batch-norms), exported with the
project's exporter: every stage compared, the float32 floor measured, and a wrong weight caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.onnx_export import export_onnx
from export.parity import FLOOR_FACTOR, main, run_parity
from export.parity_inputs import COMPACT_STRESS, default_inputs
from model.checkpoint import save_checkpoint
from model.network import state_to_numpy
from model.numpy_efficientnet import NumpyEfficientNetLite
from tests.lite0_nets import calibrated_lite0, lite0_config

SIZE = 64
OUTPUTS = ("logits", "stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head")
ENGINES = ("torch", "numpy", "ort-cpu", "onnx-reference")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("parity_lite0")
    net = calibrated_lite0(SIZE, seed=21)
    save_checkpoint(out / "ckpt.npz", net.config, state_to_numpy(net), {"seed": 21})
    export_onnx(net, out / "model.onnx", {"name": "parity-lite0-test"})
    return out / "ckpt.npz", out / "model.onnx"


def _inputs() -> dict[str, np.ndarray]:
    return default_inputs(lite0_config(SIZE).preprocessing, synth=0, stress=COMPACT_STRESS)


def test_every_engine_agrees_on_every_stage_within_float32(exported: tuple[Path, Path]) -> None:
    """All four engines on every stage and the logits, every pair; each pair within FLOOR_FACTOR times float32's own
    error (NumPy float32 against float64). That error is far above 1e-5 on the deep stages (maps of values near
    10-20), which is why the strict element rule cannot hold for any float32 pair here."""
    ckpt, model = exported
    inputs = _inputs()
    assert list(inputs) == list(COMPACT_STRESS)
    report = run_parity(ckpt, model, inputs, providers=["CPUExecutionProvider"])
    assert report.engines == ENGINES
    assert {(c.output, c.a, c.b) for c in report.comparisons} == {
        (o, b, a) for o in OUTPUTS for i, a in enumerate(ENGINES) for b in ENGINES[i + 1 :]
    }
    floors = dict(report.floors)
    assert set(floors) == set(OUTPUTS) and all(f > 0 for f in floors.values())
    assert max(floors.values()) > 1e-5  # float32 alone is beyond the strict rule on this network
    assert report.within_float32, report.format_table()
    for c in report.comparisons:
        assert c.elements > 0 and c.max_abs <= max(report.atol, FLOOR_FACTOR * floors[c.output]), c


def _shift_one_bias(src: Path, dst: Path) -> None:
    """Add 0.05 to one bias of block 4's projection in the ONNX file: the first block of stage3, whose output has no
    activation to hide the change, so stage3 and everything after it move and nothing before."""
    proto = onnx.load(str(src))
    conv = next(n for n in proto.graph.node if n.op_type == "Conv" and n.name.startswith("/blocks.4/project/"))
    init = next(i for i in proto.graph.initializer if i.name == conv.input[2])
    bias = numpy_helper.to_array(init).copy()
    bias[0] += 0.05
    init.CopyFrom(numpy_helper.from_array(bias, init.name))
    onnx.save(proto, str(dst))


def test_a_wrong_weight_fails_the_float32_rule_on_exactly_its_pairs(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, model = exported
    bad = tmp_path / "shifted.onnx"
    _shift_one_bias(model, bad)
    report = run_parity(ckpt, bad, _inputs(), providers=["CPUExecutionProvider"])
    failed = {(c.output, c.a, c.b) for c in report.comparisons if report.float32_ratio(c) > 1}
    onnx_engines, own = ("ort-cpu", "onnx-reference"), ("torch", "numpy")
    downstream = {(o, a, b) for o in OUTPUTS[4:] for a in onnx_engines for b in own}
    assert not report.within_float32
    assert {(o, a, b) for o in ("stage3", "stage4", "head") for a in onnx_engines for b in own} <= failed
    assert failed <= downstream | {("logits", a, b) for a in onnx_engines for b in own}


def test_the_cli_exit_status_follows_the_chosen_rule(
    exported: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Default inputs for this network (the compact set, rendered photos included when the generator exists)."""
    ckpt, model = exported
    assert main(["--rule", "float32", "--checkpoint", str(ckpt), "--onnx", str(model)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[-2] == "strict rule (every element as above): FAIL"
    assert table[-1].startswith("float32 rule") and table[-1].endswith("): PASS")
    assert main(["--checkpoint", str(ckpt), "--onnx", str(model)]) == 1


def test_a_wrong_numpy_engine_cannot_raise_its_own_floor(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The floor compares the NumPy engine with itself in two precisions: an engine wrong in both (stage5 on shifted
    by 3e-3) leaves the floor at rounding size, and exactly its own pairs from stage5 on fail the float32 rule."""
    forward = NumpyEfficientNetLite.forward
    shifted = ("stage5", "stage6", "stage7", "head")

    def wrong_forward(self: NumpyEfficientNetLite, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        logits, maps = forward(self, x)
        return logits, {k: v + np.asarray(3e-3, v.dtype) if k in shifted else v for k, v in maps.items()}

    monkeypatch.setattr(NumpyEfficientNetLite, "forward", wrong_forward)
    ckpt, model = exported
    report = run_parity(ckpt, model, _inputs(), providers=["CPUExecutionProvider"])
    assert all(floor < 1e-3 for floor in dict(report.floors).values())
    failed = {(c.output, c.a, c.b) for c in report.comparisons if report.float32_ratio(c) > 1}
    expected = {(c.output, c.a, c.b) for c in report.comparisons if "numpy" in (c.a, c.b) and c.output in shifted}
    assert expected and failed == expected and not report.within_float32
