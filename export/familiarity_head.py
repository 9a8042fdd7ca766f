"""The familiarity distance (``model.familiarity``) as a PyTorch module, so the exported graph computes it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.familiarity import Familiarity


class FamiliarityHead(nn.Module):
    """``(N, C, H, W)`` last-stage map -> ``(N,)`` distance to the nearest class, as ``Familiarity.distances``.

    Computed in float32 as ``sum_r along_r^2 / lambda_r + |residual|^2 / sigma^2`` with the residual subtracted
    explicitly, not as ``Familiarity.distances``'s ``sum_r w_r along_r^2 + |f - mu|^2 / sigma^2``: the two terms of
    the latter cancel (``w_r`` is close to ``-1 / sigma^2`` when the training photos vary little outside the leading
    directions), which float64 survives but float32 does not (0.7% off on a trained network's features).
    """

    def __init__(self, familiarity: Familiarity) -> None:
        super().__init__()
        inverse_eigenvalues = (
            np.asarray(familiarity.weights, dtype=np.float64) + familiarity.inv_residual
        )  # 1 / lambda_r
        self.register_buffer("means", torch.as_tensor(familiarity.means, dtype=torch.float32))
        self.register_buffer("components", torch.as_tensor(familiarity.components, dtype=torch.float32))
        self.register_buffer("inverse_eigenvalues", torch.as_tensor(inverse_eigenvalues, dtype=torch.float32))
        self.inv_residual = float(familiarity.inv_residual)

    def forward(self, last_map: torch.Tensor) -> torch.Tensor:
        features = last_map.mean(dim=(2, 3))  # no cast: a Cast node would take over the stage output's name
        centred = features.unsqueeze(0) - self.means.unsqueeze(1)  # (K, N, D)
        along = centred @ self.components.T  # (K, N, R)
        residual = centred - along @ self.components  # (K, N, D), orthogonal to the leading directions
        distance = (along * along) @ self.inverse_eigenvalues + self.inv_residual * (residual * residual).sum(dim=2)
        return distance.amin(dim=0)
