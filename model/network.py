"""The triage CNN in PyTorch: named stages of conv -> batch-norm -> ReLU [-> max-pool], a global pool, a linear head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.config import NetworkConfig, Stage
from model.efficientnet import EfficientNetLite


def _stage_block(stage: Stage, in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            stage.channels,
            stage.kernel,
            stride=stage.stride,
            padding=stage.padding,
            dilation=stage.dilation,
            bias=False,
        ),
        nn.BatchNorm2d(stage.channels),
        nn.ReLU(inplace=True),
    ]
    if stage.pool:
        layers.append(nn.MaxPool2d(stage.pool, stage.pool))
    return nn.Sequential(*layers)


class TriageNet(nn.Module):
    """``(N, 3, S, S)`` normalised photos -> ``(N, num_classes)`` logits; stage maps via ``forward_stages``."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        blocks: dict[str, nn.Module] = {}
        channels = self.config.in_channels
        for stage in self.config.stages:
            blocks[stage.name] = _stage_block(stage, channels)
            channels = stage.channels
        self.stages = nn.ModuleDict(blocks)
        self.head = nn.Linear(channels, self.config.num_classes)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits ``(N, K)`` and every stage's feature map ``(N, C, H, W)`` by stage name."""
        maps: dict[str, torch.Tensor] = {}
        for name, block in self.stages.items():
            x = block(x)
            maps[name] = x
        pooled = x.amax(dim=(2, 3)) if self.config.global_pool == "max" else x.mean(dim=(2, 3))
        return self.head(pooled), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]


Network = TriageNet | EfficientNetLite  # both give ``forward_stages(x) -> (logits, {stage: map})`` and ``config``


def build_network(config: NetworkConfig | None = None, seed: int | None = None, pretrained: bool = False) -> Network:
    """The network ``config.network`` names, freshly initialised; ``seed`` makes the initial weights reproducible.

    ``pretrained`` loads the published ImageNet weights into a backbone (``model.pretrained``; the classifier stays
    freshly initialised); the from-scratch network has none and refuses it.
    """
    if seed is not None:
        torch.manual_seed(seed)
    config = config or NetworkConfig()
    if config.network == "scratch":
        if pretrained:
            raise ValueError("the scratch network has no pretrained weights")
        return TriageNet(config)
    net = EfficientNetLite(config)
    if pretrained:
        from model.pretrained import load_imagenet

        load_imagenet(net)
    return net


def state_to_numpy(net: Network) -> dict[str, np.ndarray]:
    """The network's ``state_dict`` as float32/int64 NumPy arrays (for ``model.checkpoint``)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def load_numpy_state(net: Network, weights: dict[str, np.ndarray]) -> Network:
    """Load NumPy weights (from ``model.checkpoint``) into ``net``; names must match exactly."""
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=True)
    return net
