"""``triage predict``: route local photo files in-process with ONNX Runtime (no torch), or through a service."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.preprocess import PHOTO_SUFFIXES
from service.inference.engine import load_engine
from service.inference.intake import IntakeError, IntakeLimits, read_photo

# A local file is refused only for its pixels: the byte limit protects the service from what is uploaded to it, and a
# phone screenshot saved as PNG is larger than that limit yet costs no more to decode than its pixel count says.
LOCAL_LIMITS = IntakeLimits(max_bytes=sys.maxsize)


def _route_local(files: Sequence[Path], model: Path) -> list[dict[str, Any]]:
    engine = load_engine(model, device="auto")
    results: list[dict[str, Any]] = []
    for path in files:
        started = time.perf_counter()
        try:
            data = path.read_bytes()
        except OSError as exc:
            results.append({"file": str(path), "error": {"status": 404, "message": f"cannot read file: {exc}"}})
            continue
        try:
            prepared, timings = read_photo(data, engine.preprocessing, LOCAL_LIMITS)
        except IntakeError as exc:
            results.append({"file": str(path), "error": {"status": exc.status, "message": exc.message}})
            continue
        t0 = time.perf_counter()
        outputs = engine.infer(prepared.tensor[np.newaxis], engine.route_outputs)
        inference = time.perf_counter() - t0
        decision = engine.decisions(outputs)[0]
        results.append(
            {
                "file": str(path),
                **decision.to_dict(),
                "photo": {"width": prepared.photo.width, "height": prepared.photo.height},
                "timings_ms": {
                    **{k: round(v * 1000, 2) for k, v in timings.items()},
                    "inference": round(inference * 1000, 2),
                    "total": round((time.perf_counter() - started) * 1000, 2),
                },
                **engine.provenance(),
            }
        )
    return results


def expand_folders(paths: Sequence[Path]) -> list[Path]:
    """``paths`` with each folder replaced by the photos below it (by file name, sorted); files stay as given."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        else:
            out.append(path)
    return out


def predict_files(
    files: Sequence[Path], *, as_json: bool, url: str | None, model: Path, api_key: str | None = None
) -> int:
    """Print one result per file (a folder stands for the photos below it); exit status 0 if every file was routed,
    1 if any failed."""
    files = expand_folders(files)
    if url:
        from triage_cli.client import route_remote

        results = route_remote(files, url, api_key=api_key)
    else:
        results = _route_local(files, model)
    for r in results:
        if as_json:
            print(json.dumps(r))
        elif "error" in r:
            print(f"{r['file']}: error {r['error']['status']}: {r['error']['message']}")
        else:
            print(f"{r['file']}: {r['route']} (confidence {r['confidence']:.3f})")
    return 1 if any("error" in r for r in results) else 0
