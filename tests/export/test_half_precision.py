"""fp16 export: float16 weights inside, float32 at the edges, within the documented fp16 rule of fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from export.half_precision import export_fp16, fp16_mismatches


def test_fp16_model_agrees_with_fp32_within_the_fp16_rule(random_model_dir: Path, tmp_path: Path) -> None:
    half = export_fp16(random_model_dir / "triage.onnx", tmp_path / "fp16.onnx")
    proto = onnx.load(str(half))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    x = np.random.default_rng(0).standard_normal((2, 3, 256, 256)).astype(np.float32)
    s32, s16 = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (random_model_dir / "triage.onnx", half)
    )
    names = [o.name for o in s32.get_outputs()]
    for name, ref, got in zip(names, s32.run(names, {"input": x}), s16.run(names, {"input": x}), strict=True):
        assert got.dtype == np.float32
        assert fp16_mismatches(got, ref) == 0, name
        assert not np.array_equal(got, ref), f"{name}: fp16 output identical to fp32, the graph was not converted"


def test_fp16_rule_flags_real_differences() -> None:
    ref = np.array([1.0, -2.0, 0.5, 1e-6])
    assert fp16_mismatches(ref * (1 + 4e-3), ref) == 0
    assert fp16_mismatches(ref + np.array([0.0, 0.1, 0.0, 0.0]), ref) == 1
