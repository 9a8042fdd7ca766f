"""Forward time of one photo: the NumPy engine (of whichever network the model holds) against ONNX Runtime (CPU),
same weights, same input.

    .venv/bin/python bench/numpy_engine.py [--repeat 10]

Prints a table of medians in milliseconds, and the ratio, from one run on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.card import CHECKPOINT_NAME, ONNX_NAME
from model.numpy_engine import load_numpy_network
from model.preprocess import prepare
from model.synth import render_photo


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    numpy_net = load_numpy_network(args.artifacts / CHECKPOINT_NAME)
    session = ort.InferenceSession(str(args.artifacts / ONNX_NAME), providers=["CPUExecutionProvider"])
    spec = numpy_net.config.preprocessing
    x = prepare(render_photo(3, "screen_damage", split="test").encode(), spec).tensor[np.newaxis]
    outputs = [o.name for o in session.get_outputs()]
    rows = {
        "NumPy engine (float32)": median_ms(lambda: numpy_net.forward(x), args.repeat),
        "ONNX Runtime CPU": median_ms(lambda: session.run(outputs, {"input": x}), args.repeat),
    }
    photos = [prepare(render_photo(s, "screen_damage", split="test").encode(), spec).tensor for s in range(8)]
    batch = np.stack(photos)
    same = np.abs(numpy_net.forward(batch)[0] - session.run(["logits"], {"input": batch})[0]).max()
    base = rows["ONNX Runtime CPU"]
    print(f"one {spec.size}x{spec.size} photo, every stage's map and the logits; median of {args.repeat} runs\n")
    print("| engine | forward ms | x ONNX Runtime |\n|---|---:|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.1f} |")
    print(f"\nmax |logit difference| between the two over {len(photos)} photos: {same:.2e}")


if __name__ == "__main__":
    main()
