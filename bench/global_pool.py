"""Global max pool against global average pool: the same network, photos and budget, only the pool differs.

    .venv/bin/python bench/global_pool.py [--pools max avg] [--n-train 6000] [--epochs 4]

For each pool the six-stage network (``model.config.SIX_STAGES``) is trained by ``model.train.train`` on the
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.short_runs import print_short_runs, short_budget_parser, short_run
from model.config import GLOBAL_POOLS, SIX_STAGES, NetworkConfig


def measure(pool: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    return short_run(NetworkConfig(stages=SIX_STAGES, global_pool=pool), args, work / pool, work / "cache")


def main() -> None:
    parser = short_budget_parser(__doc__.split("\n")[0], crack_weight=0.0)
    parser.add_argument("--pools", nargs="+", choices=GLOBAL_POOLS, default=list(GLOBAL_POOLS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {pool: measure(pool, args, Path(tmp)) for pool in args.pools}
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per pool; test split of {args.n_test} photos\n")
    print_short_runs("global pool", rows)


if __name__ == "__main__":
    main()
