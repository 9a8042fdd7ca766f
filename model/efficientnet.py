"""EfficientNet-Lite0 in PyTorch, built from ``NetworkConfig.backbone``: stem, inverted-residual blocks, 1x1 head.

No squeeze-excite, ReLU6 activations, batch-norm eps from the config (1e-3 for the pretrained weights), symmetric
``kernel // 2`` padding. The torch ``state_dict`` names are the config's ConvBN names (``stem.conv.weight``,
``blocks.3.depthwise.bn.running_var``, ``head.conv.weight``, ``classifier.weight``); ``model.pretrained`` maps the
published ImageNet weights onto them.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import Backbone, ConvBN, InvertedResidual, NetworkConfig


class ConvBNAct(nn.Module):
    """``(N, C_in, H, W) -> (N, C_out, H', W')``: conv (no bias) -> batch-norm [-> ReLU6]."""

    def __init__(self, unit: ConvBN, eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            unit.in_channels,
            unit.out_channels,
            unit.kernel,
            stride=unit.stride,
            padding=unit.padding,
            groups=unit.groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(unit.out_channels, eps=eps)
        self.act = nn.ReLU6(inplace=True) if unit.relu6 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """One inverted-residual block; adds its input when ``spec.residual``."""

    def __init__(self, spec: InvertedResidual, eps: float) -> None:
        super().__init__()
        self.residual = spec.residual
        for unit in spec.convs():
            self.add_module(unit.name.rsplit(".", 1)[1], ConvBNAct(unit, eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for unit in self.children():
            out = unit(out)
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """``(N, 3, S, S)`` normalised photos -> ``(N, K)`` logits; stage maps via ``forward_stages``."""

    def __init__(self, config: NetworkConfig, backbone: Backbone | None = None) -> None:
        """``backbone`` replaces ``config.backbone`` (a narrower copy of the same geometry, for tests)."""
        super().__init__()
        backbone = backbone or config.backbone
        if backbone is None:
            raise ValueError(f"network {config.network!r} has no pretrained backbone")
        self.config = config
        self.stem = ConvBNAct(backbone.stem, backbone.bn_eps)
        self.blocks = nn.ModuleList(MBConv(block, backbone.bn_eps) for block in backbone.blocks)
        self.head = ConvBNAct(backbone.head, backbone.bn_eps)
        self.classifier = nn.Linear(backbone.head.out_channels, config.num_classes)
        # the block index after which each stage's map is taken
        self._stage_ends = {i: block.stage for i, block in enumerate(backbone.blocks)}
        self.frozen_blocks = 0

    def freeze(self, blocks: int) -> EfficientNetLite:
        """Fix the stem and the first ``blocks`` blocks: no gradients, and their batch norms stay in eval mode (the
        running statistics of the pretrained weights) even when the network trains. ``freeze(0)`` frees them all."""
        if not 0 <= blocks <= len(self.blocks):
            raise ValueError(f"can freeze 0 to {len(self.blocks)} blocks, got {blocks}")
        self.frozen_blocks = blocks
        for module in self.frozen_modules():
            module.requires_grad_(False)
        for module in self.trainable_modules():
            module.requires_grad_(True)
        return self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *self.blocks[: self.frozen_blocks]] if self.frozen_blocks else []

    def trainable_modules(self) -> list[nn.Module]:
        body = [self.stem, *self.blocks] if not self.frozen_blocks else list(self.blocks[self.frozen_blocks :])
        return [*body, self.head, self.classifier]

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits ``(N, K)`` and every stage's feature map ``(N, C, H, W)`` by stage name (the last block's output of
        each stage group, plus ``stem`` and ``head``)."""
        x = self.stem(x)
        maps = {"stem": x}
        for i, block in enumerate(self.blocks):
            x = block(x)
            maps[self._stage_ends[i]] = x  # later blocks of the same stage overwrite earlier ones
        x = self.head(x)
        maps["head"] = x
        return self.classifier(x.mean(dim=(2, 3))), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]
