"""fp16 variant of the exported model, for CUDA: ``python -m export.half_precision [--model P] [--out P]``.

The graph's weights and arithmetic become float16 while its input and outputs stay float32
(``keep_io_types``), so the service feeds it exactly what it feeds the fp32 model. float16 keeps 11 significant
bits (unit round-off 2**-11, about 4.9e-4) against float32's 24, so fp16 is compared to fp32 with a looser rule
than the 1e-5 of ``triage parity``: an element fails only if both ``|a - b| > FP16_ATOL * max|b|`` and
``|a - b| / |b| > FP16_RTOL``, with both set to 1e-2 (about 20 round-offs, accumulated over the network's
convolutions).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
from onnxruntime.transformers.onnx_model import OnnxModel

FP16_ATOL = 1e-2
FP16_RTOL = 1e-2
FP16_NAME = "triage.fp16.onnx"


def export_fp16(model: Path, out: Path) -> Path:
    """Write the float16 version of ``model`` (float32 input and outputs) to ``out`` and check it."""
    half = OnnxModel(convert_float_to_float16(onnx.load(str(model)), keep_io_types=True))
    half.topological_sort()  # the converter appends its input casts after the nodes that read them
    half = half.model
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(out))
    return out


def fp16_mismatches(fp16: np.ndarray, fp32: np.ndarray) -> int:
    """Elements of ``fp16`` that fail the fp16 rule against the ``fp32`` reference (same shape)."""
    if fp16.shape != fp32.shape:
        raise ValueError(f"fp16 output shape {fp16.shape} differs from fp32 shape {fp32.shape}")
    diff = np.abs(fp16.astype(np.float64) - fp32)
    scale = float(np.abs(fp32).max()) or 1.0
    return int(np.count_nonzero((diff > FP16_ATOL * scale) & (diff > FP16_RTOL * np.abs(fp32))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.half_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = export_fp16(args.model, args.out or args.model.with_name(FP16_NAME))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
