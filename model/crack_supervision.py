"""Where the cracks are, as a training signal: crack targets for the last stage's cells and a head that predicts them.

Every generated damaged photo comes with its crack mask, which ``model.crack_cells`` maps into the network input and
sums over ``CELL_PX`` x ``CELL_PX`` cells; ``crack_targets`` pools those sums onto the last stage's grid, where a cell
holds a crack when at least ``MIN_CRACK_PX`` input pixels of crack fall in it. During training a 1x1 convolution on
the last stage's map (``CrackHead``) learns to say which cells hold a crack, beside the classification loss, so the
features the global pool averages are pushed to encode crack lines apart from the text, UI edges and textures that
look like them. The head exists only in training: the exported network, its parity with the NumPy engine and its
explanations keep their form. Photos without a mask (a user's ImageFolder tree) train without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.config import NetworkConfig
from model.crack_cells import CELL_PX
from model.receptive_field import stage_fields

MIN_CRACK_PX = 2.0
POS_WEIGHT = 3.0  # a damaged photo's crack covers about 9 of the 64 cells, an intact photo's none


def crack_targets(cells: torch.Tensor, config: NetworkConfig) -> torch.Tensor:
    """``(N, S / CELL_PX, S / CELL_PX)`` crack pixels per input cell -> ``(N, 1, h, w)`` 0/1 targets for the last
    stage's ``h x w`` map."""
    field = stage_fields(config)[config.stage_names[-1]]
    h, w = field.out_size
    if field.jump % CELL_PX:
        raise ValueError(f"the last stage's stride {field.jump} is not a multiple of the {CELL_PX} px crack cell")
    factor = field.jump // CELL_PX
    pooled = F.avg_pool2d(cells.unsqueeze(1).float(), factor) * factor**2
    if pooled.shape[-2] < h or pooled.shape[-1] < w:
        raise ValueError(f"crack cells {tuple(cells.shape[-2:])} do not cover the last stage's map {(h, w)}")
    return (pooled[..., :h, :w] >= MIN_CRACK_PX).float()


class CrackHead(nn.Module):
    """A 1x1 convolution: the last stage's ``(N, C, h, w)`` map -> ``(N, 1, h, w)`` crack logits."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.register_buffer("pos_weight", torch.tensor(POS_WEIGHT))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the predicted crack cells against ``targets`` (from ``crack_targets``)."""
        logits = self(features).float()
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight)


def crack_head(config: NetworkConfig, weight: float, cells: np.ndarray | None) -> CrackHead | None:
    """The head for training ``config`` when it has something to learn from: a positive weight and crack cells."""
    if weight < 0:
        raise ValueError(f"the crack-location loss weight must be >= 0, got {weight}")
    if weight == 0 or cells is None:
        return None
    return CrackHead(config.stage_channels()[config.stage_names[-1]])


def describe(head: CrackHead | None, weight: float) -> dict[str, Any]:
    """What the model card records about the crack-location loss."""
    used = head is not None
    return {"used": used, "weight": weight if used else 0.0, "min_crack_px": MIN_CRACK_PX, "pos_weight": POS_WEIGHT}
