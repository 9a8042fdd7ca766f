"""What the short-budget training comparisons report (``bench/global_pool.py``, ``bench/crack_supervision.py``).

A network trained by ``bench.input_size.short_training`` is measured on the test split at its own decision (argmax):
accuracy, recall of each class, and the share of intact screens showing text or an app (the generator's
``screen_content`` of general_returns photos) called damaged, where the shipped model goes wrong most
(``docs/BENCHMARKS.md``, "Where the model goes wrong").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.input_size import short_training
from model.config import NetworkConfig
from model.factor_errors import split_factors

TEXT_OR_APP = ("text", "ui_light", "ui_dark")


def short_budget_parser(description: str, crack_weight: float | None = 1.0) -> argparse.ArgumentParser:
    """The arguments every short-budget comparison takes: photos per split, epochs, and (unless the comparison is
    over it, ``crack_weight=None``) the crack-location loss weight."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    if crack_weight is not None:
        parser.add_argument("--crack-weight", type=float, default=crack_weight)
    return parser


def short_run(config: NetworkConfig, args: argparse.Namespace, out: Path, cache: Path) -> dict[str, float]:
    """Train ``config`` on ``args``' budget into ``out`` and measure it on the test split."""
    card, seconds, logits, labels = short_training(config, args, out, cache)
    predicted = logits.argmax(1)
    content = np.array([f.get("screen_content", "") for f in split_factors("test", args.n_test, 0)])
    intact_text = (labels == 1) & np.isin(content, TEXT_OR_APP)
    return {
        "accuracy": float((predicted == labels).mean()),
        "damage_recall": float((predicted[labels == 0] == 0).mean()),
        "returns_recall": float((predicted[labels == 1] == 1).mean()),
        "text_screens_damaged": float((predicted[intact_text] == 0).mean()),
        "text_screens": int(intact_text.sum()),
        "val_loss": min(h["val_loss"] for h in card["training"]["history"]),
        "train_s": seconds,
    }


def print_short_runs(what: str, rows: dict[object, dict[str, float]]) -> None:
    """One markdown row per run, ``what`` naming the column that tells the runs apart."""
    n_text = next(iter(rows.values()))["text_screens"]
    print(
        f"| {what} | accuracy | screen_damage recall | general_returns recall "
        f"| intact text/app screens called damaged (of {n_text}) | best val loss | train s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        cells = [r["accuracy"], r["damage_recall"], r["returns_recall"], r["text_screens_damaged"]]
        print(f"| {name} | " + " | ".join(f"{c:.1%}" for c in cells) + f" | {r['val_loss']:.3f} | {r['train_s']:.0f} |")
