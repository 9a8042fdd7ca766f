"""Training with and without the crack-location loss: the same network, photos and budget, only its weight differs.

    .venv/bin/python bench/crack_supervision.py [--weights 0 1 3] [--n-train 6000] [--epochs 4]

For each weight the default network is trained by ``model.train.train`` with ``TrainOptions(crack_weight=w)``
(``model.crack_supervision``: a 1x1 convolution on the last stage learns which cells of the generated photo hold a
crack, beside the classification loss; 0 turns it off) on the same generated photos and seeds, then measured on the
test split as ``bench.short_runs`` describes. A short budget makes every model weaker than the shipped one; the
comparison is between weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.short_runs import print_short_runs, short_budget_parser, short_run
from model.config import SIX_STAGES, NetworkConfig


def main() -> None:
    parser = short_budget_parser(__doc__.split("\n")[0], crack_weight=None)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for weight in args.weights:
            run = argparse.Namespace(**{**vars(args), "crack_weight": weight})
            rows[f"{weight:g}"] = short_run(
                NetworkConfig(stages=SIX_STAGES), run, Path(tmp) / f"w{weight:g}", Path(tmp) / "cache"
            )
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per weight; test split of {args.n_test} photos\n")
    print_short_runs("crack-location loss weight", rows)


if __name__ == "__main__":
    main()
