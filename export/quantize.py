"""int8 static quantisation (QDQ) of the exported model, and the measurement that decides whether to ship it.

    python -m export.quantize [--model artifacts/triage.onnx] [--n-test 2000] [--n-calibration 256] [--repeat 30]

Activations are calibrated on generated *validation* photos (never the test split); weights are per-channel int8.
The int8 model is measured against the fp32 one on the generated test split (accuracy) and at batch 1 and 8 on
this CPU (median latency, both cores). It is shipped as ``triage.int8.onnx`` only if it is faster at both batch
sizes and loses at most 0.5 accuracy point; either way the figures go into the model card under
``quantization``, and the folder then holds the int8 file exactly when the card lists it (a run that does not
ship withdraws an int8 file an earlier run shipped). ``--no-card`` measures only and changes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from model.card import CARD_NAME, read_card, sha256_file, write_card
from model.config import INPUT_NAME, LOGITS_NAME, Preprocessing
from model.data import synthetic_split
from model.preprocess import normalize

INT8_NAME = "triage.int8.onnx"
MAX_ACCURACY_LOSS = 0.005


class _Photos(CalibrationDataReader):
    """Feeds normalised photos ``(B, 3, S, S)`` to the calibrator, ``batch`` at a time."""

    def __init__(self, pixels: np.ndarray, spec: Preprocessing, batch: int = 16) -> None:
        self._batches = iter([normalize(pixels[i : i + batch], spec) for i in range(0, len(pixels), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_model(model: Path, out: Path, calibration: np.ndarray, spec: Preprocessing) -> Path:
    """Write the QDQ int8 model of ``model`` to ``out``, calibrated on ``calibration`` ``(N, S, S, 3)`` uint8."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            _Photos(calibration, spec),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return out


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predicted_classes(session: ort.InferenceSession, pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """Class index ``(N,)`` per photo, the larger logit of ``session`` on letterboxed ``uint8 (N, S, S, 3)`` pixels."""
    out = [
        session.run([LOGITS_NAME], {INPUT_NAME: normalize(pixels[i : i + 64], spec)})[0].argmax(1)
        for i in range(0, len(pixels), 64)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(session: ort.InferenceSession, pixels: np.ndarray, labels: np.ndarray, spec: Preprocessing) -> float:
    """Top-1 accuracy of ``session`` on ``pixels`` ``(N, S, S, 3)`` uint8."""
    return float((predicted_classes(session, pixels, spec) == labels).mean())


def latency_ms(session: ort.InferenceSession, batch: np.ndarray, repeat: int) -> float:
    """Median milliseconds of one ``session.run`` for the logits of ``batch`` ``(B, 3, S, S)``."""
    session.run([LOGITS_NAME], {INPUT_NAME: batch})
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        session.run([LOGITS_NAME], {INPUT_NAME: batch})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def evaluate(model: Path, n_test: int, n_calibration: int, repeat: int, int8_path: Path) -> dict[str, Any]:
    """Quantise ``model`` into ``int8_path``, compare it with fp32, decide, and return the figures for the card."""
    spec = Preprocessing.from_dict(read_card(model.parent / CARD_NAME)["preprocessing"])
    calibration = synthetic_split("val", n_calibration, spec).pixels
    test = synthetic_split("test", n_test, spec)
    quantize_model(model, int8_path, calibration, spec)
    rows: dict[str, dict[str, float]] = {}
    sample = normalize(test.pixels[:8], spec)
    for name, path in (("fp32", model), ("int8", int8_path)):
        session = _session(path)
        rows[name] = {
            "accuracy": accuracy(session, test.pixels, test.labels, spec),
            "batch1_ms": latency_ms(session, sample[:1], repeat),
            "batch8_ms": latency_ms(session, sample, repeat),
            "bytes": path.stat().st_size,
        }
    faster = all(rows["int8"][k] < rows["fp32"][k] for k in ("batch1_ms", "batch8_ms"))
    loss = rows["fp32"]["accuracy"] - rows["int8"]["accuracy"]
    shipped = faster and loss <= MAX_ACCURACY_LOSS
    return {
        "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations (MinMax)",
        "calibration": f"{n_calibration} generated validation photos",
        "test_photos": n_test,
        "cpu_threads": "onnxruntime default (all cores)",
        "results": rows,
        "accuracy_loss_points": round(loss * 100, 3),
        "shipped": shipped,
        "file": INT8_NAME if shipped else None,
        "sha256": sha256_file(int8_path) if shipped else None,
        "rule": f"ship only if faster at batch 1 and 8 and accuracy loss <= {MAX_ACCURACY_LOSS * 100} points",
    }


def format_table(report: dict[str, Any]) -> str:
    lines = ["| model | test accuracy | batch 1 ms | batch 8 ms | MB |", "|---|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        lines.append(
            f"| {name} | {r['accuracy']:.2%} | {r['batch1_ms']:.2f} | {r['batch8_ms']:.2f} | {r['bytes'] / 1e6:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--n-calibration", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-card", action="store_true", help="measure only: change neither the card nor the files")
    args = parser.parse_args(argv)
    final = args.model.parent / INT8_NAME
    candidate = final.with_name(f"{INT8_NAME}.candidate")
    try:
        report = evaluate(args.model, args.n_test, args.n_calibration, args.repeat, candidate)
        print(format_table(report))
        verdict = "shipped as " + INT8_NAME if report["shipped"] and not args.no_card else "not shipped"
        print(f"\nint8 loses {report['accuracy_loss_points']:.2f} accuracy points; {verdict} ({report['rule']})")
        if not args.no_card:
            card_path = args.model.parent / CARD_NAME
            card = read_card(card_path)
            card["quantization"] = report
            if report["shipped"]:
                candidate.replace(final)
                card["artifacts"][INT8_NAME] = {"sha256": report["sha256"], "bytes": report["results"]["int8"]["bytes"]}
            else:
                final.unlink(missing_ok=True)
                card["artifacts"].pop(INT8_NAME, None)
            write_card(card_path, card)
    finally:
        candidate.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
