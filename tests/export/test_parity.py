"""Parity of PyTorch, the NumPy engine, ONNX Runtime and the ONNX reference evaluator on an exported random network."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from export.onnx_export import export_onnx
from export.parity import compare, main, run_parity
from export.parity_inputs import default_inputs
from model.checkpoint import save_checkpoint
from model.config import NetworkConfig, Preprocessing, Stage
from model.network import build_network, state_to_numpy
from model.numpy_net import NumpyTriageNet

CONFIG = NetworkConfig(
    stages=(
        Stage("stage1", 6, stride=2),
        Stage("stage2", 8),
        Stage("stage3", 8),
        Stage("stage4", 10, pool=0),
        Stage("stage5", 12, padding=2, dilation=2, pool=0),
    ),
    preprocessing=Preprocessing(size=48),
)
OUTPUTS = ("logits", "stage1", "stage2", "stage3", "stage4", "stage5")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A randomly initialised network (random batch-norm statistics too) as checkpoint and ONNX file."""
    out = tmp_path_factory.mktemp("parity")
    net = build_network(CONFIG, seed=21)
    gen = torch.Generator().manual_seed(21)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    net.eval()
    save_checkpoint(out / "ckpt.npz", CONFIG, state_to_numpy(net), {"seed": 21})
    export_onnx(net, out / "model.onnx", {"name": "parity-test"})
    return out / "ckpt.npz", out / "model.onnx"


def test_parity_passes_on_a_random_exported_network(exported: tuple[Path, Path]) -> None:
    ckpt, model = exported
    inputs = default_inputs(CONFIG.preprocessing, synth=0)
    assert len(inputs) == 16
    report = run_parity(ckpt, model, inputs, providers=["CPUExecutionProvider"])
    assert report.engines == ("torch", "numpy", "ort-cpu", "onnx-reference")
    assert {(c.output, c.a, c.b) for c in report.comparisons} == {
        (o, b, a) for o in OUTPUTS for i, a in enumerate(report.engines) for b in report.engines[i + 1 :]
    }
    assert report.passed, report.format_table()
    assert all(c.elements > 0 and c.max_abs <= 1e-5 for c in report.comparisons)


def _perturb_one_weight(src: Path, ckpt: Path, dst: Path) -> None:
    """Add 0.05 to one weight of stage3's convolution in the ONNX file: the centre tap joining the most active
    stage2 channel to the most active stage3 channel (a tap on a channel ReLU silenced would change nothing)."""
    x = np.stack(list(default_inputs(CONFIG.preprocessing, synth=0).values())[:4])
    _, maps = NumpyTriageNet.from_checkpoint(ckpt).forward(x)
    c_in, c_out = (int(maps[s].sum(axis=(0, 2, 3)).argmax()) for s in ("stage2", "stage3"))
    proto = onnx.load(str(src))
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    target = convs[2].input[1]
    init = next(i for i in proto.graph.initializer if i.name == target)
    weights = numpy_helper.to_array(init).copy()
    weights[c_out, c_in, 1, 1] += 0.05
    init.CopyFrom(numpy_helper.from_array(weights, target))
    onnx.save(proto, str(dst))


def test_cli_passes_then_fails_when_one_onnx_weight_is_perturbed(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, model = exported
    assert main(["--checkpoint", str(ckpt), "--onnx", str(model)]) == 0
    out = capsys.readouterr().out
    assert "strict rule (every element as above): PASS" in out and "float32 rule" in out

    bad = tmp_path / "perturbed.onnx"
    _perturb_one_weight(model, ckpt, bad)
    assert main(["--json", "--checkpoint", str(ckpt), "--onnx", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and len(report["inputs"]) >= 16
    failed = {(c["output"], c["a"], c["b"]) for c in report["comparisons"] if not c["passed"]}
    onnx_engines = {"ort-cpu", "onnx-reference"}
    # Exactly the ONNX engines disagree with PyTorch and NumPy, from stage3 on and in the logits; same-side pairs
    # (torch vs numpy, ort-cpu vs onnx-reference) and stages 1-2 still agree.
    downstream = ("logits", "stage3", "stage4", "stage5")
    assert failed == {(o, a, b) for o in downstream for a in onnx_engines for b in ("torch", "numpy")}


def test_cli_reports_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--checkpoint", str(tmp_path / "none.npz"), "--onnx", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rule_needs_both_absolute_and_relative_excess() -> None:
    b = np.array([0.0, 1e-9, 1.0, 1000.0, 1.0], np.float32)
    a = np.array([9e-6, 5e-6, 1.0 + 9e-6, 1000.009, np.nan], np.float32)
    max_abs, _, ratio, failing = compare(a, b)
    assert failing.tolist() == [False, False, False, False, True]  # only NaN fails: each other diff meets one bound
    a2 = np.array([2e-5, 0.0, 1.0 + 2e-5, 1000.0, 1.0], np.float32)
    assert compare(a2, b)[3].tolist() == [True, False, True, False, False]
    assert np.isnan(max_abs) and np.isnan(ratio)


def test_reported_figures_follow_their_definitions() -> None:
    """max abs, max rel (over elements beyond atol) and the ratio |a-b| / max(atol, rtol |b|), from first
    principles on hand-picked float64 values."""
    b = np.array([1.0, 100.0, 0.0, 2.0])
    a = np.array([1.0 + 4e-6, 100.0 + 5e-4, 3e-6, 2.0 + 3e-5])
    max_abs, max_rel, ratio, failing = compare(a, b)
    assert max_abs == pytest.approx(5e-4, rel=1e-9)
    assert max_rel == pytest.approx(max(5e-4 / 100.0, 3e-5 / 2.0), rel=1e-9)  # 4e-6 and 3e-6 are within atol
    assert ratio == pytest.approx(3e-5 / max(1e-5, 2e-5), rel=1e-9)  # 1.5; the 5e-4 at 100 is only 0.5 of its bound
    assert failing.tolist() == [False, False, False, True]


def test_the_worst_input_is_the_one_with_the_largest_difference() -> None:
    from export.parity import _compare_outputs

    ref = np.zeros((3, 4))
    ours = ref.copy()
    ours[0, 1], ours[1, 2], ours[2, 0] = 1e-3, 5e-2, 2e-4
    comparison = _compare_outputs("logits", "numpy", "torch", ours, ref, ["first", "second", "third"])
    assert comparison.worst_input == "second" and comparison.failures == 3


def test_a_report_with_fewer_than_two_engines_does_not_pass() -> None:
    from export.parity import ATOL, RTOL, ParityReport

    assert not ParityReport(("numpy",), ("x",), ATOL, RTOL, ()).passed
    assert ParityReport(("numpy", "torch"), ("x",), ATOL, RTOL, ()).passed


def test_default_inputs_use_rendered_photos_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in ``model.synth.render_photo`` (JPEG bytes via ``.encode()``), 8 photos go through ``prepare``."""

    class FakePhoto:
        def __init__(self, seed: int) -> None:
            self.seed = seed

        def encode(self) -> bytes:
            rng = np.random.default_rng(self.seed)
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(buf, "JPEG")
            return buf.getvalue()

    calls: list[tuple[int, str, str]] = []

    def render_photo(seed: int, label: str, split: str = "train") -> FakePhoto:
        calls.append((seed, label, split))
        return FakePhoto(seed)

    monkeypatch.setitem(sys.modules, "model.synth", types.SimpleNamespace(render_photo=render_photo))
    spec = CONFIG.preprocessing
    inputs = default_inputs(spec)
    synth = [name for name in inputs if name.startswith("synth-")]
    assert len(synth) == 8 and len(inputs) == 24
    assert {label for _, label, _ in calls} == set(spec.classes) and {s for _, _, s in calls} == {"test"}
    assert all(t.shape == (3, 48, 48) and t.dtype == np.float32 for t in inputs.values())


def test_stress_inputs_cover_the_normalised_range() -> None:
    spec = CONFIG.preprocessing
    inputs = default_inputs(spec, synth=0)
    lo = (0 - np.array(spec.mean)) / np.array(spec.std)
    hi = (1 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(inputs["black"][:, 0, 0], lo, rtol=1e-6)
    np.testing.assert_allclose(inputs["white"][:, 0, 0], hi, rtol=1e-6)
    assert np.abs(inputs["pad-colour"]).max() < 0.01 and not inputs["zeros"].any()
    assert set(np.unique(inputs["checker-1"][0])) == {np.float32(lo[0]), np.float32(hi[0])}


@pytest.mark.parametrize("engine", ["numpy", "onnx-reference"])
def test_each_engine_really_runs_a_wrong_one_fails_only_its_pairs(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """One engine made wrong on its own (stage3 and everything after it shifted by 1e-3): exactly the comparisons
    with that engine fail, so no engine's results can stand in for another's."""
    import export.parity as parity

    def shifted(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v + 1e-3 if k in ("logits", "stage3", "stage4", "stage5") else v for k, v in outputs.items()}

    if engine == "numpy":
        forward = NumpyTriageNet.forward

        def wrong_forward(self: NumpyTriageNet, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            logits, maps = forward(self, x)
            out = shifted({"logits": logits, **maps})
            return out.pop("logits"), out

        monkeypatch.setattr(NumpyTriageNet, "forward", wrong_forward)
    else:

        class WrongReference(parity.ReferenceEvaluator):
            def run(self, *args: object, **kwargs: object) -> list[np.ndarray]:
                outputs = super().run(*args, **kwargs)
                return list(shifted(dict(zip(self.output_names, outputs, strict=True))).values())

        monkeypatch.setattr(parity, "ReferenceEvaluator", WrongReference)
    ckpt, model = exported
    report = run_parity(ckpt, model, default_inputs(CONFIG.preprocessing, synth=0), providers=["CPUExecutionProvider"])
    failed = {(c.output, c.a, c.b) for c in report.comparisons if not c.passed}
    expected = {
        (c.output, c.a, c.b)
        for c in report.comparisons
        if engine in (c.a, c.b) and c.output in ("logits", "stage3", "stage4", "stage5")
    }
    assert expected and failed == expected


def test_a_stress_subset_keeps_its_names_the_photos_and_the_beyond_photos_inputs() -> None:
    from export.parity_inputs import COMPACT_STRESS

    spec = CONFIG.preprocessing
    full = default_inputs(spec, synth=0, beyond_photos=True)
    compact = default_inputs(spec, synth=0, beyond_photos=True, stress=COMPACT_STRESS)
    assert list(compact) == [name for name in full if name in {*COMPACT_STRESS, "binary-noise", "gaussian-3x"}]
    assert len(compact) == len(COMPACT_STRESS) + 2 and all(np.array_equal(compact[k], full[k]) for k in compact)
    with pytest.raises(ValueError, match=r"unknown stress inputs \['checker-3'\]"):
        default_inputs(spec, synth=0, stress=("checker-3",))
