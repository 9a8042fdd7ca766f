"""How the review threshold is chosen, and what each rule delivers on photos it was not chosen on.

    .venv/bin/python bench/review_threshold.py [--model artifacts/triage.onnx] [--n-val 1000 4000] [--confidence 0.95]

The card's threshold is the lowest confidence at which the validation photos routed automatically to each class are
at least 99% right (``model.metrics.review_threshold``): a point estimate on a few hundred photos per class, so the
promise holds on other photos only about as often as not. The alternative here asks the same of a one-sided
Wilson lower bound of that precision at ``--confidence``. Each rule is fitted on validation splits of each size in
``--n-val`` (regenerated with the card's seed, calibrated with the card's temperature) and measured on the test
and shifted splits: the share of photos routed without review and how many of those are right.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.card import CARD_NAME, card_preprocessing, read_card
from model.data import synthetic_split
from model.metrics import review_threshold, routing_report, softmax
from model.preprocess import normalize


def wilson_lower(correct: int, n: int, confidence: float) -> float:
    """One-sided Wilson score lower bound of a proportion ``correct / n`` (0 when ``n`` is 0)."""
    if n == 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - spread) / (1 + z * z / n))


def bounded_threshold(probs: np.ndarray, labels: np.ndarray, target: float, confidence: float) -> float:
    """The lowest threshold (>= 0.5) at which every class's auto-routed precision has a Wilson lower bound of at
    least ``target``; above 1 (nothing auto-routed) when none has."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = pred == labels
    for t in np.unique(np.concatenate([[0.5], conf[conf >= 0.5]])):
        routed = conf >= t
        classes = np.unique(pred[routed])
        if all(
            wilson_lower(int(correct[routed & (pred == c)].sum()), int((routed & (pred == c)).sum()), confidence)
            >= target
            for c in classes
        ):
            return float(t)
    return float(np.nextafter(1.0, 2.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    parser.add_argument("--n-val", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()

    card = read_card(args.model.parent / CARD_NAME)
    spec, seed = card_preprocessing(card), card["training"]["seed"]
    temperature, target = card["calibration"]["temperature"], card["calibration"]["target_precision"]
    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])

    def probabilities(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        data = synthetic_split(split, n, spec, seed=seed)
        batches = [normalize(data.pixels[i : i + 100], spec) for i in range(0, len(data), 100)]
        logits = np.concatenate([session.run(["logits"], {"input": x})[0] for x in batches])
        return softmax(logits.astype(np.float64), temperature), data.labels

    held = {split: probabilities(split, card["metrics"][split]["n"]) for split in ("test", "shifted")}
    rules: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "point estimate (shipped rule)": lambda p, y: review_threshold(p, y, target),
        f"Wilson lower bound, {args.confidence:.0%}": lambda p, y: bounded_threshold(p, y, target, args.confidence),
    }
    print(f"Target precision {target:.0%}; temperature {temperature:.4f} from the card.\n")
    print("| rule | validation photos | threshold | test: auto-routed | precision | shifted: auto-routed | precision |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n_val in args.n_val:
        val_probs, val_labels = probabilities("val", n_val)
        for name, rule in rules.items():
            t = rule(val_probs, val_labels)
            cells = []
            for split in ("test", "shifted"):
                report = routing_report(*held[split], t)
                cells += [f"{report['coverage']:.1%}", f"{report['auto_routed_precision']:.2%}"]
            print(f"| {name} | {n_val} | {t:.4f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
