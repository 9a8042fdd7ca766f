"""``triage explain FILE --out DIR``: explain one photo in-process and write the JSON and the pictures.

Writes ``DIR/explanation.json`` (what ``POST /v1/explain?erf=true`` answers, without the request id and timings,
each base64 PNG replaced by the name of the file it was written to), ``DIR/cam_overlay.png`` (the
class-activation map over the photo), ``DIR/<stage>_channel<k>.png`` (the top channels of every stage) and
``DIR/<stage>_erf.png`` (the effective receptive field of each stage's argmax cell, over its theoretical box).
ONNX Runtime and NumPy only, like the service.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from service.explain.explainer import Explainer
from service.explain.options import DEFAULT_CHANNELS, ExplainOptions
from service.inference.engine import load_engine
from service.inference.intake import IntakeError, IntakeLimits, read_photo

JSON_NAME = "explanation.json"


def _write_png(out: Path, name: str, encoded: str) -> str:
    (out / name).write_bytes(base64.b64decode(encoded))
    return name


def write_explanation(result: dict[str, Any], out: Path) -> list[Path]:
    """Write ``result`` (an explanation with base64 PNGs) under ``out``; returns the files written. What an earlier
    explanation wrote there is removed first, so the folder never mixes two photos' files."""
    out.mkdir(parents=True, exist_ok=True)
    for pattern in (JSON_NAME, "cam_overlay.png", "*_channel*.png", "*_erf.png"):
        for old in out.glob(pattern):
            old.unlink()
    cam = result["cam"]
    if "overlay_png" in cam:
        cam["overlay_file"] = _write_png(out, "cam_overlay.png", cam.pop("overlay_png"))
    for layer in result["layers"]:
        for channel in layer["channels"]:
            if "png" in channel:
                channel["file"] = _write_png(out, f"{layer['name']}_channel{channel['index']}.png", channel.pop("png"))
        erf = layer.get("erf")
        if erf and "png" in erf:
            erf["file"] = _write_png(out, f"{layer['name']}_erf.png", erf.pop("png"))
    (out / JSON_NAME).write_text(json.dumps(result, indent=1) + "\n")
    names = [JSON_NAME, cam.get("overlay_file")]
    names += [c.get("file") for layer in result["layers"] for c in layer["channels"]]
    names += [(layer.get("erf") or {}).get("file") for layer in result["layers"]]
    return [out / name for name in names if name]


def explain_file(file: Path, out: Path, *, model: Path, erf: bool = True, channels: int = DEFAULT_CHANNELS) -> int:
    """Explain ``file`` with the model at ``model``; 0 on success, 1 (with the reason on stderr) otherwise."""
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        print(f"{file}: cannot read file: {exc}", file=sys.stderr)
        return 1
    engine = load_engine(Path(model), device="auto")
    try:
        prepared, _ = read_photo(data, engine.preprocessing, IntakeLimits())
    except IntakeError as exc:
        print(f"{file}: error {exc.status}: {exc.message}", file=sys.stderr)
        return 1
    outputs = engine.infer(prepared.tensor[None], engine.output_names)
    decision = engine.decisions(outputs)[0]
    explainer = Explainer.from_onnx(Path(model))
    result = explainer.explain(
        prepared, {k: v[0] for k, v in outputs.items()}, decision, ExplainOptions(channels=channels, erf=erf)
    )
    result = {"file": str(file), **result, **engine.provenance()}
    written = write_explanation(result, Path(out))
    peak = result["cam"]["peak"]
    print(f"{file}: {result['route']} (confidence {result['confidence']:.3f})")
    print(f"class-activation peak for {result['cam']['class']}: cell {peak['cell']}, photo box {peak['box']}")
    print(f"wrote {len(written)} files to {out}")
    return 0
