"""Where the model goes wrong: its error rate on a generated split, by the value of each generator factor.

    .venv/bin/python bench/errors_by_factor.py [--model artifacts/triage.onnx] [--split test] [--n 2000] [--top 15]

The split is regenerated with the seeds training used for it (``model.data.synthetic_split``), routed by ONNX Runtime
at the model's own decision (the larger logit; temperature scaling does not change it), and every photo's factors
(device, screen content, crack width, surface, blur, ...) are read back from the generator without rendering
(``model.synth.sample_factors``). For each class, the table lists the factor values with the highest error rates
among those drawn at least ``--min-count`` times, beside that class's overall error rate.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.quantize import predicted_classes
from model.card import CARD_NAME, card_preprocessing, read_card
from model.config import CLASSES
from model.data import synthetic_split
from model.factor_errors import error_rates, split_factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    parser.add_argument("--split", default="test", choices=("val", "test", "shifted"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--min-count", type=int, default=20)
    args = parser.parse_args()

    spec = card_preprocessing(read_card(args.model.parent / CARD_NAME))
    data = synthetic_split(args.split, args.n, spec, seed=args.seed)
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    wrong = predicted_classes(session, data.pixels, spec) != data.labels
    rows = error_rates(split_factors(args.split, args.n, args.seed), data.labels, wrong, args.min_count)
    print(f"{args.model}: {args.split} split, {args.n} photos, accuracy {1 - wrong.mean():.2%}\n")
    for k, label in enumerate(CLASSES):
        overall = wrong[data.labels == k].mean()
        print(f"{label}: {overall:.1%} wrong overall; worst factor values (drawn >= {args.min_count} times):\n")
        print("| factor | value | wrong | photos | error rate |\n|---|---|---:|---:|---:|")
        for r in [r for r in rows if r.label == label][: args.top]:
            print(f"| {r.factor} | {r.value} | {r.errors} | {r.count} | {r.rate:.1%} |")
        print()
    if data.crack_cells is not None:
        print_misses_by_crack_size(data.crack_cells.sum(axis=(1, 2)), data.labels, wrong)


CRACK_PIXEL_BINS = (1, 50, 100, 200, 400, 800)


def print_misses_by_crack_size(crack_pixels: np.ndarray, labels: np.ndarray, wrong: np.ndarray) -> None:
    """Damaged screens missed, by how many input pixels their crack covers (``model.crack_cells``)."""
    print("screen_damage missed, by the crack's pixels at the network input:\n")
    print("| crack pixels at the input | photos | missed | miss rate |\n|---|---:|---:|---:|")
    damaged = labels == CLASSES.index("screen_damage")
    edges = (0, *CRACK_PIXEL_BINS, np.inf)
    for lo, hi in itertools.pairwise(edges):
        chosen = damaged & (crack_pixels >= lo) & (crack_pixels < hi)
        if chosen.any():
            span = f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">= {lo:g}"
            print(f"| {span} | {chosen.sum()} | {wrong[chosen].sum()} | {wrong[chosen].mean():.1%} |")


if __name__ == "__main__":
    main()
