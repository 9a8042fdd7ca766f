"""EfficientNet-Lite in plain NumPy: inference with batch-norm folded into the convolutions, plus backward passes.

Reads the same checkpoint as ``model.efficientnet.EfficientNetLite`` (its ``state_dict`` names) and reproduces its
eval-mode forward pass from ``NetworkConfig.backbone``: the stem, then every inverted-residual block
(``[expand 1x1] -> depthwise kxk -> project 1x1``, each ``conv(w') + b'`` with ``(w', b')`` the batch-norm-folded
weights, ReLU6 after all but the projection, the block's input added when the block is residual), the 1x1 head,
the global average pool and the linear classifier. Stage maps are the stem's, the last block's of each stage group
and the head's, as PyTorch's ``forward_stages`` returns them. ``backward`` has the API of
``model.numpy_net.NumpyTriageNet.backward``: gradients from the logits and/or any stage map down to the input, for
the folded weights and, through the fold, for the checkpoint's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint
from model.config import Backbone, ConvBN, InvertedResidual, NetworkConfig
from model.numpy_layers import (
    batchnorm_fold,
    batchnorm_fold_backward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    linear_backward,
    linear_forward,
    relu6_backward,
    relu6_forward,
    residual_add_backward,
    residual_add_forward,
)
from model.numpy_net import Gradients, SeededBackward, checked_seeds, take_weight
from model.numpy_ops import ConvCache, conv2d_backward, conv2d_forward


@dataclass(frozen=True)
class UnitParams:
    """One ConvBN's checkpoint parameters and their folded form ``w' = w * scale``, ``b' = beta - mean * scale``."""

    unit: ConvBN
    weight: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    w: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class UnitCache:
    conv: ConvCache
    relu6: np.ndarray | None


@dataclass(frozen=True)
class BlockCache:
    units: tuple[UnitCache, ...]
    residual: tuple[int, ...] | None  # the residual add's cache, when the block adds its input


@dataclass(frozen=True)
class LiteTrace:
    """A forward pass kept for ``backward``: logits ``(N, K)``, stage maps ``(N, C, H, W)`` and layer caches."""

    logits: np.ndarray
    maps: dict[str, np.ndarray]
    stem: UnitCache
    blocks: tuple[BlockCache, ...]
    head: UnitCache
    pool: tuple[int, int, int, int]
    classifier: tuple[np.ndarray, np.ndarray]


class NumpyEfficientNetLite(SeededBackward):
    """Eval-mode EfficientNet-Lite: ``(N, 3, H, W)`` float inputs -> ``(N, K)`` logits and stage maps."""

    def __init__(
        self,
        config: NetworkConfig,
        units: dict[str, UnitParams],
        classifier_w: np.ndarray,
        classifier_b: np.ndarray,
    ) -> None:
        backbone = config.backbone
        if backbone is None:
            raise ValueError(f"network {config.network!r} is not a backbone network")
        missing = [unit.name for _, unit in backbone.units() if unit.name not in units]
        if missing:
            raise ValueError(f"parameters lack the units {missing}")
        self.config = config
        self.backbone: Backbone = backbone
        self.units = units
        self.classifier_w = classifier_w
        self.classifier_b = classifier_b
        self.dtype = classifier_w.dtype
        self._last_of_stage = {b.stage: i for i, b in enumerate(backbone.blocks)}

    @classmethod
    def from_checkpoint(cls, path: Path, dtype: type[np.floating] = np.float32) -> NumpyEfficientNetLite:
        """Load an ``.npz`` written by ``model.checkpoint.save_checkpoint``."""
        ckpt = load_checkpoint(Path(path))
        return cls.from_weights(ckpt.config, ckpt.weights, dtype=dtype)

    @classmethod
    def from_weights(
        cls, config: NetworkConfig, weights: dict[str, np.ndarray], dtype: type[np.floating] = np.float32
    ) -> NumpyEfficientNetLite:
        """Build from ``state_dict``-named arrays; batch-norm is folded (in float64) and the result cast to dtype."""
        backbone = config.backbone
        if backbone is None:
            raise ValueError(f"network {config.network!r} is not a backbone network")
        units: dict[str, UnitParams] = {}
        for _, unit in backbone.units():
            shape = (unit.out_channels, unit.in_channels // unit.groups, unit.kernel, unit.kernel)
            weight = take_weight(weights, f"{unit.name}.conv.weight", shape).astype(np.float64)
            gamma, beta, mean, var = (
                take_weight(weights, f"{unit.name}.bn.{k}", (unit.out_channels,)).astype(np.float64)
                for k in ("weight", "bias", "running_mean", "running_var")
            )
            w_f, b_f = batchnorm_fold(weight, gamma, beta, mean, var, backbone.bn_eps)
            units[unit.name] = UnitParams(unit, *(a.astype(dtype) for a in (weight, gamma, beta, mean, var, w_f, b_f)))
        classifier_w = take_weight(weights, "classifier.weight", (config.num_classes, backbone.head.out_channels))
        classifier_b = take_weight(weights, "classifier.bias", (config.num_classes,))
        return cls(config, units, classifier_w.astype(dtype), classifier_b.astype(dtype))

    @classmethod
    def from_folded(
        cls,
        config: NetworkConfig,
        folded: dict[str, tuple[np.ndarray, np.ndarray]],
        classifier: tuple[np.ndarray, np.ndarray],
        dtype: type[np.floating] = np.float32,
    ) -> NumpyEfficientNetLite:
        """Build from already folded ``{unit name: (w' (F, C / groups, k, k), b' (F,))}`` (an ONNX file's convs);
        the batch-norm parameters are then the identity (``gamma = 1, mean = 0, var = 1 - eps``, ``beta = b'``)."""
        backbone = config.backbone
        if backbone is None:
            raise ValueError(f"network {config.network!r} is not a backbone network")
        units: dict[str, UnitParams] = {}
        for _, unit in backbone.units():
            if unit.name not in folded:
                raise ValueError(f"folded weights lack the unit {unit.name!r}")
            w, b = (np.asarray(a).astype(dtype) for a in folded[unit.name])
            expected = (unit.out_channels, unit.in_channels // unit.groups, unit.kernel, unit.kernel)
            if w.shape != expected or b.shape != (unit.out_channels,):
                raise ValueError(f"{unit.name}: folded shapes {w.shape}, {b.shape}; the config needs {expected}")
            ones, zeros = np.ones_like(b), np.zeros_like(b)
            units[unit.name] = UnitParams(unit, w, ones, b, zeros, ones - dtype(backbone.bn_eps), w, b)
        return cls(config, units, classifier[0].astype(dtype), classifier[1].astype(dtype))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits ``(N, K)`` and every stage's map ``(N, C, H', W')`` by stage name; keeps no caches."""
        h = self._check_input(x)
        maps = {"stem": self._unit(h, self.backbone.stem)[0]}
        h = maps["stem"]
        for i, block in enumerate(self.backbone.blocks):
            out = h
            for unit in block.convs():
                out = self._unit(out, unit)[0]
            h = out + h if block.residual else out
            if self._last_of_stage[block.stage] == i:
                maps[block.stage] = h
        maps["head"] = self._unit(h, self.backbone.head)[0]
        logits = linear_forward(maps["head"].mean(axis=(2, 3)), self.classifier_w, self.classifier_b)[0]
        return logits, maps

    def forward_trace(self, x: np.ndarray) -> LiteTrace:
        """``forward`` keeping every layer's cache for ``backward``."""
        h, stem = self._unit(self._check_input(x), self.backbone.stem)
        maps = {"stem": h}
        blocks: list[BlockCache] = []
        for i, block in enumerate(self.backbone.blocks):
            out, caches = h, []
            for unit in block.convs():
                out, cache = self._unit(out, unit)
                caches.append(cache)
            residual = None
            if block.residual:
                out, residual = residual_add_forward(out, h)
            blocks.append(BlockCache(tuple(caches), residual))
            h = out
            if self._last_of_stage[block.stage] == i:
                maps[block.stage] = h
        h, head = self._unit(h, self.backbone.head)
        maps["head"] = h
        pooled, pool = global_avg_pool_forward(h)
        logits, classifier = linear_forward(pooled, self.classifier_w, self.classifier_b)
        return LiteTrace(logits, maps, stem, tuple(blocks), head, pool, classifier)

    def backward(
        self, trace: LiteTrace, dlogits: np.ndarray | None = None, dmaps: dict[str, np.ndarray] | None = None
    ) -> Gradients:
        """Back-propagate ``dlogits (N, K)`` and/or stage-map gradients ``dmaps[name] (N, C, H, W)``."""
        dmaps = checked_seeds(trace.logits, trace.maps, dlogits, dmaps)
        folded: dict[str, np.ndarray] = {}
        if dlogits is not None:
            dpooled, folded["classifier.weight"], folded["classifier.bias"] = linear_backward(dlogits, trace.classifier)
            dmaps["head"] = dmaps.get("head", 0) + global_avg_pool_backward(dpooled, trace.pool)
        else:
            folded["classifier.weight"] = np.zeros_like(self.classifier_w)
            folded["classifier.bias"] = np.zeros_like(self.classifier_b)
        grad = self._unit_backward(dmaps.get("head"), self.backbone.head, trace.head, folded)
        for i in reversed(range(len(self.backbone.blocks))):
            block = self.backbone.blocks[i]
            if self._last_of_stage[block.stage] == i and block.stage in dmaps:
                grad = dmaps[block.stage] if grad is None else grad + dmaps[block.stage]
            grad = self._block_backward(grad, block, trace.blocks[i], folded)
        if "stem" in dmaps:
            grad = dmaps["stem"] if grad is None else grad + dmaps["stem"]
        grad = self._unit_backward(grad, self.backbone.stem, trace.stem, folded)
        if grad is None:
            raise ValueError("backward needs dlogits or at least one stage gradient in dmaps")
        return Gradients(grad, folded, self._unfold(folded))

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"input must be (N, {self.config.in_channels}, H, W), got shape {x.shape}")
        return x.astype(self.dtype, copy=False)

    def _unit(self, x: np.ndarray, unit: ConvBN) -> tuple[np.ndarray, UnitCache]:
        p = self.units[unit.name]
        out, conv = conv2d_forward(x, p.w, p.b, unit.stride, unit.padding, groups=unit.groups)
        if not unit.relu6:
            return out, UnitCache(conv, None)
        out, mask = relu6_forward(out)
        return out, UnitCache(conv, mask)

    def _unit_backward(
        self, grad: np.ndarray | None, unit: ConvBN, cache: UnitCache, folded: dict[str, np.ndarray]
    ) -> np.ndarray | None:
        p = self.units[unit.name]
        if grad is None:
            folded[f"{unit.name}.weight"], folded[f"{unit.name}.bias"] = np.zeros_like(p.w), np.zeros_like(p.b)
            return None
        if cache.relu6 is not None:
            grad = relu6_backward(grad, cache.relu6)
        grad, folded[f"{unit.name}.weight"], folded[f"{unit.name}.bias"] = conv2d_backward(grad, cache.conv)
        return grad

    def _block_backward(
        self, grad: np.ndarray | None, block: InvertedResidual, cache: BlockCache, folded: dict[str, np.ndarray]
    ) -> np.ndarray | None:
        skip = None
        if grad is not None and cache.residual is not None:
            grad, skip = residual_add_backward(grad, cache.residual)
        for unit, unit_cache in zip(reversed(block.convs()), reversed(cache.units), strict=True):
            grad = self._unit_backward(grad, unit, unit_cache, folded)
        return grad if skip is None else grad + skip

    def _unfold(self, folded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The folded gradients under the checkpoint's names: ``{unit}.conv.weight``, ``{unit}.bn.weight`` and
        ``{unit}.bn.bias``, ``classifier.weight`` and ``classifier.bias``."""
        params = {"classifier.weight": folded["classifier.weight"], "classifier.bias": folded["classifier.bias"]}
        for name, p in self.units.items():
            dw, dgamma, dbeta = batchnorm_fold_backward(
                folded[f"{name}.weight"], folded[f"{name}.bias"], p.weight, p.gamma, p.mean, p.var, self.backbone.bn_eps
            )
            params[f"{name}.conv.weight"], params[f"{name}.bn.weight"], params[f"{name}.bn.bias"] = (
                a.astype(self.dtype) for a in (dw, dgamma, dbeta)
            )
        return params
