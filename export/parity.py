"""Numerical parity of every engine that runs the triage network, output by output and engine pair by engine pair.

Engines: PyTorch eager (the checkpoint's network), the NumPy engine, ONNX Runtime on CPU (and on CUDA when a
session really runs on it, TF32 off), and ``onnx.reference.ReferenceEvaluator``, compared on the logits and every
stage map. An element fails only if ``|a - b| > atol`` and ``|a - b| / |b| > rtol`` (``b``: the pair's second
engine), ``atol = rtol = 1e-5``. ``max rel`` covers the elements with ``|a - b| > atol`` (0 if none); ``ratio`` is
the largest ``|a - b| / max(atol, rtol |b|)``, above 1 exactly when an element fails.

Every float32 engine rounds, and on a deep network the rounding outgrows 1e-5: EfficientNet-Lite0's maps hold values
near 80, and each float32 engine is ~2e-4 from exact arithmetic there. So each output also gets its float32 floor:
the largest difference between the NumPy engine in float32 and the same engine in float64, one function in two
precisions, so the floor measures rounding alone (a wrong weight or eps would be in both and cancel out of it).
``within_float32`` holds when every pair differs by at most ``max(atol, FLOOR_FACTOR x floor)``: two engines'
errors add, and another engine's rounding may exceed NumPy's (PyTorch's reached 1.6x it at the pretrained
EfficientNet-Lite0's head; its worst pair, ONNX Runtime vs PyTorch there, 3.1x the floor).

CLI: ``triage parity [--json] [--checkpoint P] [--onnx P] [--rule strict|float32]``; exit 0 when all pass (the 1e-5
rule, or ``within_float32`` with ``--rule float32``), 1 on any failure, 2 on no files.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx.reference import ReferenceEvaluator

from export.onnx_export import INPUT_NAME, LOGITS_NAME
from export.parity_inputs import COMPACT_STRESS, default_inputs
from model.checkpoint import Checkpoint, load_checkpoint
from model.network import build_network, load_numpy_state
from model.numpy_engine import numpy_network

ATOL = 1e-5
RTOL = 1e-5
DEFAULT_CHECKPOINT = Path("artifacts/triage_checkpoint.npz")
DEFAULT_ONNX = Path("artifacts/triage.onnx")
FLOOR_FACTOR = 4.0
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# The default inputs per network: (rendered photos, stress tensors or None for all 16). ``onnx.reference`` runs
# EfficientNet-Lite0's convolutions through Python-level im2col at about 2.4 s per 256 px input on 2 cores, so it
# gets 4 photos and ``COMPACT_STRESS`` (12 inputs, all full size) to keep ``triage parity`` near a minute.
DEFAULT_INPUTS: dict[str, tuple[int, tuple[str, ...] | None]] = {
    "scratch": (8, None),
    "efficientnet_lite0": (4, COMPACT_STRESS),
}
_ENGINE_NAMES = {CPU: "ort-cpu", CUDA: "ort-cuda"}

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Comparison:
    """One output compared between engines ``a`` and ``b`` (``b`` is the reference for the relative error)."""

    output: str
    a: str
    b: str
    max_abs: float
    max_rel: float
    ratio: float
    failures: int
    elements: int
    worst_input: str

    @property
    def passed(self) -> bool:
        return self.failures == 0


@dataclass(frozen=True)
class ParityReport:
    """All engine-pair comparisons of one run; ``passed`` when every comparison passes."""

    engines: tuple[str, ...]
    inputs: tuple[str, ...]
    atol: float
    rtol: float
    comparisons: tuple[Comparison, ...]
    notes: tuple[str, ...] = field(default=())
    floors: tuple[tuple[str, float], ...] = field(default=())  # (output, largest |NumPy float32 - float64|)

    @property
    def passed(self) -> bool:
        return len(self.engines) >= 2 and all(c.passed for c in self.comparisons)

    def float32_ratio(self, comparison: Comparison) -> float:
        """``max abs / max(atol, FLOOR_FACTOR x floor)`` of the comparison's output; at most 1 within float32."""
        floor = dict(self.floors).get(comparison.output, 0.0)
        return comparison.max_abs / max(self.atol, FLOOR_FACTOR * floor)

    @property
    def within_float32(self) -> bool:
        """Every pair within ``FLOOR_FACTOR`` times float32's own error (or atol); NaN fails."""
        ratios = [self.float32_ratio(c) for c in self.comparisons]
        return len(self.engines) >= 2 and bool(self.floors) and all(r <= 1 for r in ratios)

    def to_dict(self) -> dict:
        rows = [{**asdict(c), "passed": c.passed} for c in self.comparisons]
        for row in rows:
            for key in ("max_abs", "max_rel", "ratio"):
                row[key] = _finite_or_text(row[key])
        for row, c in zip(rows, self.comparisons, strict=True):
            row["float32_ratio"] = _finite_or_text(self.float32_ratio(c))
        return {
            "passed": self.passed,
            "within_float32": self.within_float32,
            "floors": {o: _finite_or_text(f) for o, f in self.floors},
            "engines": list(self.engines),
            "inputs": list(self.inputs),
            "atol": self.atol,
            "rtol": self.rtol,
            "notes": list(self.notes),
            "comparisons": rows,
        }

    def format_table(self) -> str:
        header = (
            f"{'output':<8} {'engines':<34} {'max abs':>10} {'max rel':>10} {'ratio':>8} {'failing':>9} "
            f"{'fp32 floor':>10} {'/ bound':>8}  result"
        )
        floors = dict(self.floors)
        lines = [
            f"parity of {', '.join(self.engines)} on {len(self.inputs)} inputs "
            f"(element fails if |a-b| > {self.atol:g} and |a-b|/|b| > {self.rtol:g})",
            header,
            "-" * len(header),
        ]
        for c in self.comparisons:
            pair = f"{c.a} vs {c.b}"
            lines.append(
                f"{c.output:<8} {pair:<34} {c.max_abs:>10.3g} {c.max_rel:>10.3g} {c.ratio:>8.3g} {c.failures:>9} "
                f"{floors.get(c.output, math.nan):>10.3g} {self.float32_ratio(c):>8.3g}  "
                + ("pass" if c.passed else f"FAIL (worst input: {c.worst_input})")
            )
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"strict rule (every element as above): {'PASS' if self.passed else 'FAIL'}")
        lines.append(
            f"float32 rule (every pair within max({self.atol:g}, {FLOOR_FACTOR:g} x fp32 floor)): "
            + ("PASS" if self.within_float32 else "FAIL")
        )
        return "\n".join(lines)


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def compare(
    a: np.ndarray, b: np.ndarray, atol: float = ATOL, rtol: float = RTOL
) -> tuple[float, float, float, np.ndarray]:
    """``(max |a-b|, max |a-b|/|b| over elements with |a-b| > atol, max ratio, failing mask)``, same shapes.

    The ratio of an element is ``|a-b| / max(atol, rtol |b|)``; it fails exactly when the ratio exceeds 1.
    NaN or infinite differences count as failures.
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {a.shape} and {b.shape}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ref = np.abs(b.astype(np.float64))
    ok = (diff <= atol) | (diff <= rtol * ref)
    ratio = diff / np.maximum(atol, rtol * ref)
    over = diff > atol
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(over, diff / ref, 0.0)
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    return max_abs, max_rel, float(ratio.max()) if ratio.size else 0.0, ~ok


def _compare_outputs(name: str, a: str, b: str, xa: np.ndarray, xb: np.ndarray, inputs: Sequence[str]) -> Comparison:
    if xa.shape != xb.shape:
        size = max(xa.size, xb.size)
        return Comparison(name, a, b, math.inf, math.inf, math.inf, size, size, f"shapes {xa.shape} vs {xb.shape}")
    max_abs, max_rel, ratio, failing = compare(xa, xb)
    per_input = np.abs(xa.astype(np.float64) - xb.astype(np.float64)).reshape(len(inputs), -1).max(axis=1)
    worst = inputs[int(np.nan_to_num(per_input, nan=np.inf).argmax())]
    return Comparison(name, a, b, max_abs, max_rel, ratio, int(failing.sum()), int(failing.size), worst)


def _libcuda_loadable() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _ort_session(onnx_path: Path, provider: str) -> ort.InferenceSession | None:
    """A session that really runs on ``provider``, or None (ONNX Runtime falls back to CPU silently)."""
    if provider not in ort.get_available_providers() or (provider == CUDA and not _libcuda_loadable()):
        return None
    chosen: list = [provider] if provider == CPU else [(CUDA, {"use_tf32": "0"}), CPU]
    session = ort.InferenceSession(str(onnx_path), providers=chosen)
    return session if session.get_providers()[:1] == [provider] else None


def _run_engines(
    ckpt: Checkpoint, onnx_path: Path, batch: np.ndarray, providers: Sequence[str], notes: list[str]
) -> tuple[dict[str, Outputs], dict[str, float]]:
    """Every engine's logits and stage maps for ``batch (N, C, S, S)``, by engine name, and each output's float32
    floor (largest ``|NumPy float32 - NumPy float64|``)."""
    net = load_numpy_state(build_network(ckpt.config), ckpt.weights).eval()
    with torch.no_grad():
        logits, maps = net.forward_stages(torch.from_numpy(batch))
    results = {"torch": {LOGITS_NAME: logits.numpy(), **{k: v.numpy() for k, v in maps.items()}}}
    np_logits, np_maps = numpy_network(ckpt.config, ckpt.weights).forward(batch)
    results["numpy"] = {LOGITS_NAME: np_logits, **np_maps}
    exact_logits, exact_maps = numpy_network(ckpt.config, ckpt.weights, np.float64).forward(batch.astype(np.float64))
    exact = {LOGITS_NAME: exact_logits, **exact_maps}
    floors = {name: float(np.abs(results["numpy"][name] - value).max()) for name, value in exact.items()}
    for provider in providers:
        session = _ort_session(onnx_path, provider)
        label = _ENGINE_NAMES.get(provider, provider)
        if session is None:
            notes.append(f"{label}: {provider} is not usable here (no session runs on it); left out")
            continue
        outputs = session.run(None, {INPUT_NAME: batch})
        results[label] = {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), outputs, strict=True)}
    reference = ReferenceEvaluator(str(onnx_path))
    outputs = reference.run(None, {INPUT_NAME: batch})
    results["onnx-reference"] = {n: np.asarray(v) for n, v in zip(reference.output_names, outputs, strict=True)}
    return results, floors


def run_parity(
    checkpoint_path: Path,
    onnx_path: Path,
    inputs: Mapping[str, np.ndarray] | None = None,
    providers: Sequence[str] | None = None,
    beyond_photos: bool = False,
) -> ParityReport:
    """Run every engine on ``inputs`` (name -> ``(3, S, S)``; default ``default_inputs``) and compare all outputs.

    ``providers``: the ONNX Runtime providers to try (default: CPU, plus CUDA when onnxruntime offers it). A
    provider whose session does not really run on it is left out with a note.
    """
    ckpt = load_checkpoint(Path(checkpoint_path))
    spec = ckpt.config.preprocessing
    notes: list[str] = []
    if inputs is None:
        synth, stress = DEFAULT_INPUTS[ckpt.config.network]
        inputs = default_inputs(spec, synth=synth, beyond_photos=beyond_photos, stress=stress)
        if not any(name.startswith("synth-") for name in inputs):
            notes.append("model.synth.render_photo is not available: no rendered photos among the inputs")
    inputs = dict(inputs)
    expected = (ckpt.config.in_channels, spec.size, spec.size)
    if not inputs or any(t.shape != expected for t in inputs.values()):
        shapes = {name: t.shape for name, t in inputs.items()}
        raise ValueError(f"parity needs one or more inputs of shape {expected}, got {shapes}")
    batch = np.stack([np.asarray(t, dtype=np.float32) for t in inputs.values()])
    if providers is None:
        providers = [CPU, *([CUDA] if CUDA in ort.get_available_providers() else [])]
    results, floors = _run_engines(ckpt, Path(onnx_path), batch, providers, notes)
    comparisons = []
    for output in [LOGITS_NAME, *ckpt.config.stage_names]:
        for a, b in itertools.combinations(results, 2):
            missing = [e for e in (a, b) if output not in results[e]]
            if missing:
                notes.append(f"{output}: missing from {', '.join(missing)}")
                comparisons.append(Comparison(output, b, a, math.inf, math.inf, math.inf, 1, 1, "all"))
                continue
            comparisons.append(_compare_outputs(output, b, a, results[b][output], results[a][output], list(inputs)))
    return ParityReport(
        tuple(results), tuple(inputs), ATOL, RTOL, tuple(comparisons), tuple(notes), tuple(floors.items())
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``triage parity``: print the parity table (or ``--json``); 0 when everything passes, else 1 (2: no files)."""
    parser = argparse.ArgumentParser(
        prog="triage parity",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="the PyTorch checkpoint")
    parser.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="the ONNX file exported from it")
    parser.add_argument(
        "--beyond-photos", action="store_true", help="add binary noise and a 3x Gaussian (larger than photos give)"
    )
    parser.add_argument(
        "--rule",
        choices=("strict", "float32"),
        default="strict",
        help="exit 0 on: every element within 1e-5 (strict), or every pair within 4x float32's own error (float32)",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    for path in (args.checkpoint, args.onnx):
        if not path.is_file():
            print(f"triage parity: {path} does not exist (train and export first)", file=sys.stderr)
            return 2
    report = run_parity(args.checkpoint, args.onnx, beyond_photos=args.beyond_photos)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if (report.within_float32 if args.rule == "float32" else report.passed) else 1
