"""How accuracy grows with training: the shipped recipe at several budgets, a power law fitted to its error, and
what the fit says the foundation's accuracy targets would cost on this machine.

    .venv/bin/python bench/learning_curve.py --runs /tmp/lc --budgets 3000x4 6000x6 12000x10 \\
        --card artifacts/model_card.json

Each budget ``NxE`` is ``triage train --n-train N --epochs E`` with every other option at its default (seed 0, the
same validation, test and shifted photos), written to ``RUNS/nNeE``; a budget whose model card is already there is
read, not trained again. ``--card`` adds runs made elsewhere (the shipped model, a run with another seed). A photo
pass is one training photo seen once (photos x epochs run). The fit is least squares on log error against log
passes, for the test and the shifted split; the cost of a target is read off the fit, in passes and in hours at
the largest run's own seconds per pass (photo generation and evaluation included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = [sys.executable, "-m", "triage_cli"]


@dataclass(frozen=True)
class Run:
    name: str
    photos: int
    epochs: int
    seed: int
    seconds: float
    test_error: float  # percent
    shifted_error: float
    recalls: tuple[float, ...]  # test recall per class, percent

    @property
    def passes(self) -> int:
        return self.photos * self.epochs


def read_card(path: Path, name: str) -> Run:
    card = json.loads(path.read_text())
    training, metrics = card["training"], card["metrics"]
    recalls = tuple(100 * c["recall"] for c in metrics["test"]["per_class"].values())
    return Run(
        name,
        int(training["data"]["counts"]["train"]),
        int(training["epochs_run"]),
        int(training["seed"]),
        float(training["seconds_total"]),
        100 * (1 - metrics["test"]["accuracy"]),
        100 * (1 - metrics["shifted"]["accuracy"]),
        recalls,
    )


def budget_run(runs: Path, budget: str) -> Run:
    photos, epochs = (int(v) for v in budget.lower().split("x"))
    out = runs / f"n{photos}e{epochs}"
    card = out / "model_card.json"
    if not card.exists():
        command = [*TRIAGE, "train", "--n-train", str(photos), "--epochs", str(epochs), "--out", str(out)]
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return read_card(card, budget)


def power_law(passes: np.ndarray, error: np.ndarray) -> tuple[float, float]:
    """``error = scale * passes ** exponent``: (scale, exponent) by least squares in log-log."""
    exponent, log_scale = np.polyfit(np.log(passes), np.log(error), 1)
    return float(np.exp(log_scale)), float(exponent)


def passes_for(error: float, scale: float, exponent: float) -> float:
    return (error / scale) ** (1 / exponent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/learning_curve"), help="where budgets are trained")
    parser.add_argument("--budgets", nargs="*", default=["3000x4", "6000x6", "12000x10"], help="NxE: photos x epochs")
    parser.add_argument("--card", type=Path, action="append", default=[], help="a model card trained elsewhere")
    parser.add_argument("--test-target", type=float, default=1.0, help="test error to price, percent")
    parser.add_argument("--shifted-target", type=float, default=5.0, help="shifted error to price, percent")
    args = parser.parse_args()

    runs = [budget_run(args.runs, b) for b in args.budgets]
    runs += [read_card(card, card.parent.name) for card in args.card]
    runs.sort(key=lambda r: r.passes)
    passes = np.array([r.passes for r in runs], dtype=float)
    fits = {
        "test": power_law(passes, np.array([r.test_error for r in runs])),
        "shifted": power_law(passes, np.array([r.shifted_error for r in runs])),
    }
    scale, exponent = fits["test"]
    print("| run | photos x epochs | seed | photo passes | minutes | test error | fitted | shifted error | recalls |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        recalls = " / ".join(f"{v:.1f}" for v in r.recalls)
        print(
            f"| {r.name} | {r.photos} x {r.epochs} | {r.seed} | {r.passes:,} | {r.seconds / 60:.1f} | "
            f"{r.test_error:.2f}% | {scale * r.passes**exponent:.2f}% | {r.shifted_error:.2f}% | {recalls} |"
        )
    largest = runs[-1]
    seconds_per_pass = largest.seconds / largest.passes
    print("\n| split | fit: error % = | target error | photo passes | x the largest run | hours here |")
    print("|---|---|---:|---:|---:|---:|")
    for split, target in (("test", args.test_target), ("shifted", args.shifted_target)):
        s, e = fits[split]
        need = passes_for(target, s, e)
        print(
            f"| {split} | {s:.0f} x passes^{e:.3f} | {target:g}% | {need:.3g} | {need / largest.passes:.1f} | "
            f"{need * seconds_per_pass / 3600:.1f} |"
        )
    fifteen = 15 * 60 / seconds_per_pass
    print(
        f"\n15 minutes here at {seconds_per_pass * 1000:.2f} ms per pass: {fifteen:,.0f} passes, "
        f"fitted test error {scale * fifteen**exponent:.1f}%."
    )


if __name__ == "__main__":
    main()
