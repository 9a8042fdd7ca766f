"""In-process cost of routing one phone photo: decode, preprocess and ONNX Runtime inference.

    .venv/bin/python bench/phone_photo.py [--repeat 20]

Renders a 4032x3024, a 1280x960 and a 640x480 generated photo, then times ``service.inference.intake.read_photo``
(DCT-draft decode under each ``Preprocessing.jpeg_draft`` rule, and full decode) and the engine; prints a table of
medians in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.preprocess import JPEG_DRAFTS
from model.synth import render_photo
from service.inference.engine import TriageEngine
from service.inference.intake import IntakeLimits, read_photo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    args = parser.parse_args()
    engine = TriageEngine(args.model, device="auto")
    engine.warm_up()
    limits = IntakeLimits()
    print(f"provider {engine.info.provider}; medians over {args.repeat} runs, milliseconds\n")
    print("| photo | decode | JPEG bytes | decode ms | preprocess ms | inference ms | total ms | route |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    modes = [(f"draft, {rule}", True, replace(engine.preprocessing, jpeg_draft=rule)) for rule in JPEG_DRAFTS]
    for size in ((4032, 3024), (1280, 960), (640, 480)):
        data = render_photo(7, "screen_damage", split="test", size=size).encode()
        for label, fast, spec in [*modes, ("full", False, engine.preprocessing)]:
            rows = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                prepared, timings = read_photo(data, spec, limits, fast=fast)
                t1 = time.perf_counter()
                logits = engine.infer(prepared.tensor[np.newaxis])["logits"]
                t2 = time.perf_counter()
                rows.append((timings["decode"], timings["preprocess"], t2 - t1, t2 - t0))
            med = [statistics.median(r[i] for r in rows) * 1000 for i in range(4)]
            route = engine.decide(logits)[0].route
            print(
                f"| {size[0]}x{size[1]} | {label} | {len(data):,} | {med[0]:.1f} | {med[1]:.1f} | {med[2]:.1f} "
                f"| {med[3]:.1f} | {route} |"
            )


if __name__ == "__main__":
    main()
