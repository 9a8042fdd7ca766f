"""Intact twins: training photos of a damaged screen beside the same photo without the fracture.

    .venv/bin/python bench/intact_twins.py [--twins 0 0.5] [--n-train 6000] [--epochs 4]

Every screen_damage photo shows a device, but only 60% of general_returns photos do, so an intact screen showing
text or an app is a rare negative, and the shipped model calls half of the intact text screens damaged
(``docs/BENCHMARKS.md``, "Where the model goes wrong"). ``model.synth.render.render_twins`` renders a damaged photo
and its twin, identical but for the crack. ``--twins`` is the share of general_returns training photos replaced by
such twins; validation and test photos are the generator's own. The six-stage network and recipe
(crack-location loss weight 1), the same seeds and budget for each share, measured on the test split at each
model's own decision.
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
    parser = short_budget_parser(__doc__.split("\n")[0])
    parser.add_argument("--twins", type=float, nargs="+", default=[0.0, 0.5])
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for share in args.twins:
            run = argparse.Namespace(**{**vars(args), "twins": share})
            rows[f"{share:.0%}"] = short_run(
                NetworkConfig(stages=SIX_STAGES), run, Path(tmp) / f"twins-{share}", Path(tmp) / "cache"
            )
            print(share, rows[f"{share:.0%}"], flush=True)
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per share; test split of {args.n_test} photos\n")
    print_short_runs("twins among general_returns", rows)


if __name__ == "__main__":
    main()
