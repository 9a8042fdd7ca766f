"""The familiarity distance (``model.familiarity``) as a PyTorch module, so the exported graph computes it."""

from __future__ import annotations

import torch
from torch import nn

from model.familiarity import Familiarity


class FamiliarityHead(nn.Module):
    """``(N, C, H, W)`` last-stage map -> ``(N,)`` distance to the nearest class, as ``Familiarity.distances``."""

    def __init__(self, familiarity: Familiarity) -> None:
        super().__init__()
        self.register_buffer("means", torch.as_tensor(familiarity.means, dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(familiarity.components, dtype=torch.float32))
        self.register_buffer("weights", torch.as_tensor(familiarity.weights, dtype=torch.float32))
        self.inv_residual = float(familiarity.inv_residual)

    def forward(self, last_map: torch.Tensor) -> torch.Tensor:
        features = last_map.float().mean(dim=(2, 3))
        centred = features.unsqueeze(0) - self.means.unsqueeze(1)  # (K, N, D)
        along = centred @ self.components.T  # (K, N, R)
        distance = (along * along) @ self.weights + self.inv_residual * (centred * centred).sum(dim=2)
        return distance.amin(dim=0)
