"""Global max pool against global average pool: the same network, photos and budget, only the pool differs.

    .venv/bin/python bench/global_pool.py [--pools max avg] [--n-train 6000] [--epochs 4]

For each pool the default network (``NetworkConfig(global_pool=...)``) is trained by ``model.train.train`` on the
same generated photos, seeds and budget, then measured on the test split at its own decision (argmax): accuracy,
recall of each class, and the share of intact screens showing text or an app (the generator's ``screen_content``
of general_returns photos) called damaged, which is where the average pool went wrong most (``docs/BENCHMARKS.md``,
"Where the model goes wrong"). A short budget makes every model weaker than the shipped one; the comparison is
between pools.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.errors_by_factor import split_factors
from bench.input_size import short_training
from model.config import GLOBAL_POOLS, NetworkConfig

TEXT_OR_APP = ("text", "ui_light", "ui_dark")


def measure(pool: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    card, seconds, logits, labels = short_training(NetworkConfig(global_pool=pool), args, work / pool, work / "cache")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", nargs="+", choices=GLOBAL_POOLS, default=list(GLOBAL_POOLS))
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {pool: measure(pool, args, Path(tmp)) for pool in args.pools}
    n_text = next(iter(rows.values()))["text_screens"]
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per pool; test split of {args.n_test} photos\n")
    print(
        "| global pool | accuracy | screen_damage recall | general_returns recall "
        f"| intact text/app screens called damaged (of {n_text}) | best val loss | train s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for pool, r in rows.items():
        cells = [r["accuracy"], r["damage_recall"], r["returns_recall"], r["text_screens_damaged"]]
        print(f"| {pool} | " + " | ".join(f"{c:.1%}" for c in cells) + f" | {r['val_loss']:.3f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
