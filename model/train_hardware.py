"""Where training runs and in what precision: ``triage train --device`` and ``--precision``."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")


def training_device(requested: str) -> torch.device:
    """The device training runs on: ``"auto"`` is CUDA when torch sees a GPU, else the CPU."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no usable CUDA device")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def training_precision(requested: str, device: torch.device | None = None) -> str:
    """``"bf16"`` or ``"fp32"``: what the forward passes of training compute in.

    bf16 autocast (convolutions and matmuls in bfloat16, weights, optimiser state, losses and evaluation in
    float32) is several times faster on CPUs with native bf16 (AVX512-BF16, AMX) and slower where it is emulated,
    so ``"auto"`` picks it only where oneDNN reports native support; on a GPU, where CUDA reports bf16 support.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if device is not None and device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if native else "fp32"
