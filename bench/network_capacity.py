"""Six stages, deeper or wider: the same photos, seeds and short budget, only the network's stages differ.

    .venv/bin/python bench/network_capacity.py [--networks six_stages deeper wider_late] [--n-train 6000] [--epochs 4]

The six-stage model shipped before got only about 95% of its own training photos right, so its stages may have
been too few or too narrow for telling text from cracks. Each network here is built from the same kind of stage
(conv, batch-norm, ReLU, optional max-pool), trained by ``model.train.train`` with the crack-location loss (weight
1) and without intact twins, and measured on the test split at its own decision; each row names its convolutions
and their multiply-adds per photo.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.short_runs import print_short_runs, short_budget_parser, short_run
from model.config import SIX_STAGES, NetworkConfig, Stage

NETWORKS: dict[str, tuple[Stage, ...]] = {
    # the network shipped before: one convolution per stage
    "six_stages": SIX_STAGES,
    # one more convolution at 32x32 and one more at 16x16: the network shipped now
    "deeper": NetworkConfig().stages,
    # six stages, wider where the grid is coarse
    "wider_late": (
        Stage("stage1", 24, stride=2),
        Stage("stage2", 48),
        Stage("stage3", 96),
        Stage("stage4", 160),
        Stage("stage5", 224, pool=0),
        Stage("stage6", 224, pool=0),
    ),
}


def multiply_adds(config: NetworkConfig) -> int:
    """Convolution multiply-adds for one photo at the config's input size."""
    size, channels, total = config.preprocessing.size, config.in_channels, 0
    for s in config.stages:
        size = (size + 2 * s.padding - s.dilation * (s.kernel - 1) - 1) // s.stride + 1
        total += size * size * s.channels * channels * s.kernel * s.kernel
        channels = s.channels
        size = size // s.pool if s.pool else size
    return total


def main() -> None:
    parser = short_budget_parser(__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            config = NetworkConfig(stages=NETWORKS[name])
            row = short_run(config, args, Path(tmp) / name, Path(tmp) / "cache")
            label = f"{name} ({len(config.stages)} convs, {multiply_adds(config) / 1e6:.0f}M MACs)"
            rows[label] = row
            print(label, row, flush=True)
    print(f"\n{args.n_train} training photos x {args.epochs} epochs per network; test split of {args.n_test} photos\n")
    print_short_runs("network", rows)


if __name__ == "__main__":
    main()
