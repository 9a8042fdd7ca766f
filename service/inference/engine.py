"""The ONNX Runtime engine: device selection that tells the truth, session creation, warm-up and routing."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from model.card import CARD_NAME, card_preprocessing, read_card, sha256_file
from model.config import INPUT_NAME, LOGITS_NAME, Preprocessing
from model.familiarity import UNFAMILIARITY_NAME
from service.inference.routing import Decision, calibrated_probabilities, decide

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICE_PREFERENCES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The requested device cannot be used (e.g. ``cuda`` on a machine without a usable GPU)."""


class ModelLoadError(RuntimeError):
    """A model a command was pointed at cannot be used: missing, without its card, tampered with, not ONNX."""


class ModelIntegrityError(RuntimeError):
    """The model file does not match the hash recorded in its model card."""


def visible_gpus(dev: Path = Path("/dev"), env: str | None = None) -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every ``/dev/nvidiaN`` node (no
    torch, no CUDA call)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return sorted((p.name.removeprefix("nvidia") for p in dev.glob("nvidia[0-9]*")), key=int)


def verified_card(onnx_path: Path) -> tuple[dict[str, Any], str]:
    """The model card beside ``onnx_path`` and the file's sha256; ``ModelIntegrityError`` unless the card records
    exactly that sha256 for the file."""
    card = read_card(onnx_path.parent / CARD_NAME)
    actual = sha256_file(onnx_path)
    expected = card.get("artifacts", {}).get(onnx_path.name, {}).get("sha256")
    if actual != expected:
        raise ModelIntegrityError(
            f"{onnx_path} has sha256 {actual} but the model card records {expected}; refusing to serve it"
        )
    return card, actual


def plan_providers(preference: str, available: Sequence[str], has_gpu: bool) -> list[str]:
    """The provider list to ask ONNX Runtime for.

    ``auto``: CUDA then CPU when a GPU is present and this onnxruntime build has the CUDA provider, else CPU.
    ``cuda``: CUDA then CPU (the caller checks afterwards that CUDA really took the session), or DeviceError now
    if it cannot possibly work. ``cpu``: CPU only.
    """
    if preference not in DEVICE_PREFERENCES:
        raise ValueError(f"device must be one of {DEVICE_PREFERENCES}, got {preference!r}")
    cuda_possible = has_gpu and CUDA in available
    if preference == "cuda" and not cuda_possible:
        why = "no NVIDIA GPU device found" if not has_gpu else f"this onnxruntime has no {CUDA} ({list(available)})"
        raise DeviceError(f"device=cuda requested but {why}")
    if preference == "cpu" or not cuda_possible:
        return [CPU]
    return [CUDA, CPU]


def provider_in_use(preference: str, planned: Sequence[str], session_providers: Sequence[str]) -> str:
    """The provider that really runs the model; ONNX Runtime falls back to CPU silently, so check."""
    used = session_providers[0] if session_providers else CPU
    if preference == "cuda" and used != CUDA:
        raise DeviceError(f"device=cuda requested; asked ONNX Runtime for {list(planned)} but it gave {used}")
    if CUDA in planned and used != CUDA:
        log.warning("CUDA provider could not be created; running on %s", used)
    return used


@dataclass(frozen=True)
class EngineInfo:
    provider: str
    device: str
    model_sha256: str


class TriageEngine:
    """An ONNX Runtime session over the shipped model plus what it needs to route (classes, calibration)."""

    def __init__(
        self,
        onnx_path: Path,
        *,
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.card, actual = verified_card(self.onnx_path)
        self.preprocessing: Preprocessing = card_preprocessing(self.card)
        self.classes: tuple[str, ...] = tuple(self.card["classes"])
        self.temperature = float(self.card["calibration"]["temperature"])
        self.threshold = float(self.card["calibration"]["review_threshold"])
        available = ort.get_available_providers()
        planned = plan_providers(device, available, bool(visible_gpus()))
        if CUDA in planned and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=planned)
        provider = provider_in_use(device, planned, self.session.get_providers())
        gpu_id = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        self.info = EngineInfo(provider, f"cuda:{gpu_id}" if provider == CUDA else "cpu", actual)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        # Abstention on the unfamiliar (model.familiarity): the graph computes each photo's distance, the card holds
        # the threshold fitted on validation photos. A model without both routes on confidence alone.
        familiarity = self.card.get("familiarity")
        self.unfamiliar_above: float | None = None
        if familiarity is not None:
            if UNFAMILIARITY_NAME not in self.output_names:
                raise ModelIntegrityError(
                    f"the model card fits a familiarity threshold but {self.onnx_path.name} has no "
                    f"{UNFAMILIARITY_NAME!r} output"
                )
            self.unfamiliar_above = float(familiarity["threshold"])
        self.route_outputs: tuple[str, ...] = (LOGITS_NAME,) + (
            (UNFAMILIARITY_NAME,) if self.unfamiliar_above is not None else ()
        )
        log.info("model %s on %s (%s)", self.onnx_path.name, self.info.provider, self.info.device)

    def provenance(self) -> dict[str, Any]:
        """What every answer says about who made it: ``model`` (name, version, sha256), ``device``, ``provider``."""
        model = {"name": self.card["name"], "version": self.card["version"], "sha256": self.info.model_sha256}
        return {"model": model, "device": self.info.device, "provider": self.info.provider}

    def infer(self, batch: np.ndarray, outputs: Sequence[str] = (LOGITS_NAME,)) -> dict[str, np.ndarray]:
        """Run ``float32 (N, 3, S, S)`` through the model; returns the requested named outputs."""
        size = self.preprocessing.size
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, size, size):
            raise ValueError(f"expected float32 (N, 3, {size}, {size}), got {batch.dtype} {batch.shape}")
        values = self.session.run(list(outputs), {INPUT_NAME: batch})
        return dict(zip(outputs, values, strict=True))

    def decide(self, logits: np.ndarray, unfamiliarity: np.ndarray | None = None) -> list[Decision]:
        """Routes for ``(N, K)`` logits; with the ``(N,)`` familiarity distances, far photos go to review."""
        probs = calibrated_probabilities(logits, self.temperature)
        unfamiliar = None
        if unfamiliarity is not None and self.unfamiliar_above is not None:
            unfamiliar = np.asarray(unfamiliarity).reshape(-1) > self.unfamiliar_above
        return decide(probs, self.classes, self.threshold, unfamiliar)

    def decisions(self, outputs: dict[str, np.ndarray]) -> list[Decision]:
        """Routes from what ``infer(batch, self.route_outputs)`` (or more outputs) returned."""
        return self.decide(outputs[LOGITS_NAME], outputs.get(UNFAMILIARITY_NAME))

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """Run the model once per batch size so the first real request does not pay for allocation."""
        size = self.preprocessing.size
        for n in batch_sizes:
            self.infer(np.zeros((n, 3, size, size), dtype=np.float32), self.output_names)


def load_engine(onnx_path: Path, **options: Any) -> TriageEngine:
    """``TriageEngine(onnx_path, **options)``, with every reason the file cannot be used as one ``ModelLoadError``."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

    try:
        return TriageEngine(onnx_path, **options)
    except (OSError, KeyError, ValueError, ModelIntegrityError, Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:
        raise ModelLoadError(f"cannot use the model {onnx_path}: {type(exc).__name__}: {exc}") from exc
