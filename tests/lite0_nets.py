"""A randomly initialised EfficientNet-Lite0 whose maps stay O(1) at every stage, for engine comparisons.

Freshly initialised, the network's batch-norms hold mean 0, variance 1, and its maps shrink towards 0 stage after
stage (by 1e-14 at the head), where any two engines agree trivially. Here every batch-norm's running statistics are
those of its own input on a seeded batch (PyTorch's cumulative average, one pass in training mode), then its affine
parameters are drawn at random, so each stage map has values of order 1 whatever the seed.
"""

from __future__ import annotations

import torch

from model.config import NetworkConfig, Preprocessing
from model.network import build_network


def lite0_config(size: int) -> NetworkConfig:
    return NetworkConfig(network="efficientnet_lite0", preprocessing=Preprocessing(size=size))


def calibrated_lite0(size: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """EfficientNet-Lite0 for ``size`` px inputs in eval mode, random weights and calibrated batch-norms."""
    net = build_network(lite0_config(size), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average: after one batch, that batch's statistics
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, size, size, generator=gen))
        for bn in norms:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) - 0.5)
    return net.eval().to(dtype)
