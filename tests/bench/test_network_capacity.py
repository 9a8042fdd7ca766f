"""bench/network_capacity.py: its multiply-add count agrees with the convolutions PyTorch actually runs."""

from __future__ import annotations

import pytest
import torch

from bench.network_capacity import NETWORKS, multiply_adds
from model.config import NetworkConfig
from model.network import build_network


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_multiply_adds_match_the_convolutions_run_by_pytorch(name: str) -> None:
    config = NetworkConfig(stages=NETWORKS[name])
    net = build_network(config).eval()
    counted: list[int] = []

    def count(module: torch.nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        kernel = module.kernel_size[0] * module.kernel_size[1]
        counted.append(output[0].numel() * module.in_channels // module.groups * kernel)

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(count)
    size = config.preprocessing.size
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    assert len(counted) == len(config.stages)
    assert multiply_adds(config) == sum(counted)
