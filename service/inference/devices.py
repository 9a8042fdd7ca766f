"""Which accelerator the worker pool runs on, decided without torch (LitServe's ``auto`` only detects GPUs via torch).

The providers come from ``service.inference.engine.plan_providers``; each worker's engine later confirms which provider
really took its session (``provider_in_use``), and that is what ``/v1/model``, the metrics and the startup log report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from service.inference.engine import CUDA, plan_providers, visible_gpus

__all__ = ["DevicePlan", "pin_worker_gpu", "plan_devices", "visible_gpus"]


@dataclass(frozen=True)
class DevicePlan:
    """LitServe's ``accelerator`` and ``devices`` arguments, and the ONNX Runtime providers each worker asks for."""

    accelerator: str
    devices: int
    providers: tuple[str, ...]


def plan_devices(preference: str, available: Sequence[str], gpus: Sequence[str]) -> DevicePlan:
    """One worker group per usable GPU, or one CPU group; ``DeviceError`` if ``cuda`` is asked for and impossible."""
    providers = tuple(plan_providers(preference, available, bool(gpus)))
    if CUDA in providers:
        return DevicePlan("cuda", len(gpus), providers)
    return DevicePlan("cpu", 1, providers)


def pin_worker_gpu(device: str, gpus: Sequence[str]) -> None:
    """In an inference worker: make LitServe's ``cuda:i`` the only GPU ONNX Runtime sees (before any CUDA call)."""
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index] if index < len(gpus) else str(index)
