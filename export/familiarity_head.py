"""The familiarity distance (``model.familiarity``) as a PyTorch module, so the exported graph computes it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.familiarity import Familiarity


class FamiliarityHead(nn.Module):
    """``(N, C, H, W)`` last-stage map -> ``(N,)`` float32 distance to the nearest class, as ``Familiarity.distances``.

    The map is pooled and the distance computed in float64, as ``Familiarity.distances`` does, and rounded to
    float32 once at the end: in float32 the distance of a trained network's features is off by up to 1e-5 of itself
    (a sum over every feature, whose largest terms are weighted by ``1 / sigma^2``, and training photos vary little
    outside the leading directions, so ``sigma^2`` is small). It is written as
    ``sum_r along_r^2 / lambda_r + |residual|^2 / sigma^2`` with the residual subtracted explicitly rather than as
    ``sum_r w_r along_r^2 + |f - mu|^2 / sigma^2``, whose two terms cancel (``w_r`` is close to ``-1 / sigma^2``).
    """

    def __init__(self, familiarity: Familiarity) -> None:
        super().__init__()
        inverse_eigenvalues = np.asarray(familiarity.weights, dtype=np.float64) + familiarity.inv_residual  # 1/lambda
        self.register_buffer("means", torch.as_tensor(familiarity.means, dtype=torch.float64))
        self.register_buffer("components", torch.as_tensor(familiarity.components, dtype=torch.float64))
        self.register_buffer("inverse_eigenvalues", torch.as_tensor(inverse_eigenvalues, dtype=torch.float64))
        self.inv_residual = float(familiarity.inv_residual)

    def forward(self, last_map: torch.Tensor) -> torch.Tensor:
        features = last_map.double().mean(dim=(2, 3))  # a new value: the stage output keeps the node computing it
        centred = features.unsqueeze(0) - self.means.unsqueeze(1)  # (K, N, D)
        along = centred @ self.components.T  # (K, N, R)
        residual = centred - along @ self.components  # (K, N, D), orthogonal to the leading directions
        distance = (along * along) @ self.inverse_eigenvalues + self.inv_residual * (residual * residual).sum(dim=2)
        return distance.amin(dim=0).float()
