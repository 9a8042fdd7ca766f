"""The triage CNN in plain NumPy: inference with batch-norm folded into the convolutions, plus backward passes.

Reads the same checkpoint as ``model.network.TriageNet`` (PyTorch ``state_dict`` names) and reproduces its eval-mode
forward pass: per stage ``conv(w') + b' -> ReLU [-> max-pool]`` with ``(w', b')`` the batch-norm-folded weights,
then the global pool (max or average, as the config says) and the linear head. ``backward`` propagates gradients
from the logits and/or any stage map down to the input, and reports parameter gradients both for the folded
weights and, by the chain rule through the fold, for the checkpoint's own parameters (conv weight, batch-norm
weight and bias, head).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.checkpoint import load_checkpoint
from model.config import NetworkConfig, Stage
from model.numpy_layers import (
    batchnorm_fold,
    batchnorm_fold_backward,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
    softmax_cross_entropy,
)
from model.numpy_ops import ConvCache, PoolCache, conv2d_backward, conv2d_forward, maxpool2d_backward, maxpool2d_forward

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which model.network uses


@dataclass(frozen=True)
class StageParams:
    """One stage's checkpoint parameters and their folded form ``w' = w * scale``, ``b' = beta - mean * scale``."""

    stage: Stage
    weight: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    w: np.ndarray
    b: np.ndarray


@dataclass(frozen=True)
class StageCache:
    conv: ConvCache
    relu: np.ndarray
    pool: PoolCache | None


@dataclass(frozen=True)
class Trace:
    """A forward pass kept for ``backward``: logits ``(N, K)``, stage maps ``(N, C, H, W)`` and layer caches."""

    logits: np.ndarray
    maps: dict[str, np.ndarray]
    stages: dict[str, StageCache]
    pool: tuple[int, int, int, int] | tuple[np.ndarray, np.ndarray]  # the global pool's cache
    head: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class LogitTarget:
    """Differentiate the logit of ``class_index``."""

    class_index: int


@dataclass(frozen=True)
class CellTarget:
    """Differentiate one activation of a stage map at ``(y, x)``: one ``channel``, or all channels summed (None)."""

    stage: str
    y: int
    x: int
    channel: int | None = None


@dataclass(frozen=True)
class Gradients:
    """``input (N, C, H, W)``; ``folded``: ``{stage}.weight``/``{stage}.bias`` of the folded convs and
    ``head.weight``/``head.bias``; ``params``: the same gradients under the checkpoint's ``state_dict`` names."""

    input: np.ndarray
    folded: dict[str, np.ndarray]
    params: dict[str, np.ndarray]


class SeededBackward(ABC):
    """``backward_to_input`` and ``loss_and_gradients``, for any engine with ``forward_trace`` and ``backward``."""

    dtype: np.dtype

    @abstractmethod
    def forward_trace(self, x: np.ndarray) -> Any:
        """A forward pass of ``x (N, C, H, W)`` whose result has ``logits (N, K)`` and ``maps`` and feeds backward."""

    @abstractmethod
    def backward(
        self, trace: Any, dlogits: np.ndarray | None = None, dmaps: dict[str, np.ndarray] | None = None
    ) -> Gradients:
        """Back-propagate ``dlogits (N, K)`` and/or stage-map gradients ``dmaps[name] (N, C, H, W)``."""

    def backward_to_input(self, trace: Any, target: LogitTarget | CellTarget) -> np.ndarray:
        """Gradient ``(N, C, H, W)`` of the target (per sample) with respect to the input of ``trace``."""
        dlogits, dmaps = target_seeds(trace.logits, trace.maps, target, self.dtype)
        return self.backward(trace, dlogits=dlogits, dmaps=dmaps).input

    def loss_and_gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, Gradients]:
        """Mean softmax cross-entropy of ``x (N, C, H, W)`` against ``labels (N,)`` and all its gradients."""
        trace = self.forward_trace(x)
        loss, dlogits = softmax_cross_entropy(trace.logits, labels)
        return loss, self.backward(trace, dlogits=dlogits)


class NumpyTriageNet(SeededBackward):
    """Eval-mode triage network: ``(N, 3, S, S)`` float inputs -> ``(N, K)`` logits and stage maps."""

    def __init__(
        self, config: NetworkConfig, stages: tuple[StageParams, ...], head_w: np.ndarray, head_b: np.ndarray
    ) -> None:
        self.config = config
        self.stages = stages
        self.head_w = head_w
        self.head_b = head_b
        self.dtype = head_w.dtype

    @classmethod
    def from_checkpoint(cls, path: Path, dtype: type[np.floating] = np.float32) -> NumpyTriageNet:
        """Load an ``.npz`` written by ``model.checkpoint.save_checkpoint``."""
        ckpt = load_checkpoint(Path(path))
        return cls.from_weights(ckpt.config, ckpt.weights, dtype=dtype)

    @classmethod
    def from_weights(
        cls, config: NetworkConfig, weights: dict[str, np.ndarray], dtype: type[np.floating] = np.float32
    ) -> NumpyTriageNet:
        """Build from ``state_dict``-named arrays; batch-norm is folded (in float64) and the result cast to dtype."""
        stages: list[StageParams] = []
        in_ch = config.in_channels
        for st in config.stages:
            prefix = f"stages.{st.name}"
            shapes = {
                f"{prefix}.0.weight": (st.channels, in_ch, st.kernel, st.kernel),
                **{f"{prefix}.1.{k}": (st.channels,) for k in ("weight", "bias", "running_mean", "running_var")},
            }
            arrays = {k: take_weight(weights, k, shape) for k, shape in shapes.items()}
            raw = [arrays[f"{prefix}.{k}"].astype(np.float64) for k in ("0.weight", "1.weight", "1.bias")]
            mean, var = (arrays[f"{prefix}.1.{k}"].astype(np.float64) for k in ("running_mean", "running_var"))
            w_f, b_f = batchnorm_fold(raw[0], raw[1], raw[2], mean, var, BN_EPS)
            stages.append(StageParams(st, *(a.astype(dtype) for a in (*raw, mean, var, w_f, b_f))))
            in_ch = st.channels
        head_w = take_weight(weights, "head.weight", (config.num_classes, in_ch)).astype(dtype)
        head_b = take_weight(weights, "head.bias", (config.num_classes,)).astype(dtype)
        return cls(config, tuple(stages), head_w, head_b)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits ``(N, K)`` and every stage's map ``(N, C, H, W)`` by stage name."""
        trace = self.forward_trace(x)
        return trace.logits, trace.maps

    def forward_trace(self, x: np.ndarray) -> Trace:
        """``forward`` keeping every layer's cache for ``backward``."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"input must be (N, {self.config.in_channels}, H, W), got shape {x.shape}")
        h = x.astype(self.dtype, copy=False)
        maps: dict[str, np.ndarray] = {}
        caches: dict[str, StageCache] = {}
        for sp in self.stages:
            st = sp.stage
            h, conv_cache = conv2d_forward(h, sp.w, sp.b, st.stride, st.padding, st.dilation)
            h, relu_cache = relu_forward(h)
            pool_cache = None
            if st.pool:
                h, pool_cache = maxpool2d_forward(h, st.pool, st.pool)
            maps[st.name] = h
            caches[st.name] = StageCache(conv_cache, relu_cache, pool_cache)
        pool_forward = global_max_pool_forward if self.config.global_pool == "max" else global_avg_pool_forward
        pooled, global_cache = pool_forward(h)
        logits, head_cache = linear_forward(pooled, self.head_w, self.head_b)
        return Trace(logits, maps, caches, global_cache, head_cache)

    def backward(
        self, trace: Trace, dlogits: np.ndarray | None = None, dmaps: dict[str, np.ndarray] | None = None
    ) -> Gradients:
        """Back-propagate ``dlogits (N, K)`` and/or stage-map gradients ``dmaps[name] (N, C, H, W)``."""
        dmaps = checked_seeds(trace.logits, trace.maps, dlogits, dmaps)
        folded: dict[str, np.ndarray] = {}
        last = self.stages[-1].stage.name
        if dlogits is not None:
            dpooled, folded["head.weight"], folded["head.bias"] = linear_backward(dlogits, trace.head)
            pool_backward = global_max_pool_backward if self.config.global_pool == "max" else global_avg_pool_backward
            dmaps[last] = dmaps.get(last, 0) + pool_backward(dpooled, trace.pool)  # type: ignore[arg-type]
        else:
            folded["head.weight"], folded["head.bias"] = np.zeros_like(self.head_w), np.zeros_like(self.head_b)
        grad: np.ndarray | None = None
        for sp in reversed(self.stages):
            name, cache = sp.stage.name, trace.stages[sp.stage.name]
            if name in dmaps:
                grad = dmaps[name] if grad is None else grad + dmaps[name]
            if grad is None:
                folded[f"{name}.weight"], folded[f"{name}.bias"] = np.zeros_like(sp.w), np.zeros_like(sp.b)
                continue
            if cache.pool is not None:
                grad = maxpool2d_backward(grad, cache.pool)
            grad = relu_backward(grad, cache.relu)
            grad, folded[f"{name}.weight"], folded[f"{name}.bias"] = conv2d_backward(grad, cache.conv)
        if grad is None:
            raise ValueError("backward needs dlogits or at least one stage gradient in dmaps")
        return Gradients(grad, folded, self._unfold(folded))

    def _unfold(self, folded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Chain rule through ``w' = w * s``, ``b' = beta - mean * s``, ``s = gamma / sqrt(var + eps)``."""
        params = {"head.weight": folded["head.weight"], "head.bias": folded["head.bias"]}
        for sp in self.stages:
            name = sp.stage.name
            grads = batchnorm_fold_backward(
                folded[f"{name}.weight"], folded[f"{name}.bias"], sp.weight, sp.gamma, sp.mean, sp.var, BN_EPS
            )
            for key, grad in zip(("0.weight", "1.weight", "1.bias"), grads, strict=True):
                params[f"stages.{name}.{key}"] = grad.astype(self.dtype)
        return params


def checked_seeds(
    logits: np.ndarray,
    maps: dict[str, np.ndarray],
    dlogits: np.ndarray | None,
    dmaps: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    """A copy of the stage seeds ``dmaps`` after checking them and ``dlogits`` against a trace's ``logits (N, K)``
    and ``maps`` (names and shapes); ValueError naming both shapes otherwise."""
    dmaps = dict(dmaps or {})
    unknown = set(dmaps) - set(maps)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; the network has {list(maps)}")
    for name, grad in dmaps.items():
        if grad.shape != maps[name].shape:
            raise ValueError(f"gradient for {name} has shape {grad.shape}, the map is {maps[name].shape}")
    if dlogits is not None and dlogits.shape != logits.shape:
        raise ValueError(f"dlogits shape {dlogits.shape} does not match logits shape {logits.shape}")
    return dmaps


def target_seeds(
    logits: np.ndarray, maps: dict[str, np.ndarray], target: LogitTarget | CellTarget, dtype: np.dtype
) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
    """The ``(dlogits, dmaps)`` seed that makes ``backward`` differentiate ``target`` for each sample: a one-hot
    ``(N, K)`` for a logit, or a one at ``(y, x)`` of one channel (or all channels) of a stage map ``(N, C, H, W)``."""
    if isinstance(target, LogitTarget):
        k = logits.shape[1]
        if not 0 <= target.class_index < k:
            raise ValueError(f"class_index {target.class_index} out of range for logits shape {logits.shape}")
        seed = np.zeros_like(logits)
        seed[:, target.class_index] = 1
        return seed, None
    if target.stage not in maps:
        raise ValueError(f"unknown stage {target.stage!r}; the network has {list(maps)}")
    shape = maps[target.stage].shape
    if not (0 <= target.y < shape[2] and 0 <= target.x < shape[3]):
        raise ValueError(f"cell ({target.y}, {target.x}) is outside {target.stage} map of shape {shape}")
    if target.channel is not None and not 0 <= target.channel < shape[1]:
        raise ValueError(f"channel {target.channel} is outside {target.stage} map of shape {shape}")
    seed = np.zeros(shape, dtype=dtype)
    channels = slice(None) if target.channel is None else target.channel
    seed[:, channels, target.y, target.x] = 1
    return None, {target.stage: seed}


def take_weight(weights: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """``weights[key]`` as an array of ``shape``; ValueError naming the key and both shapes otherwise."""
    if key not in weights:
        raise ValueError(f"weights lack {key!r} (expected shape {shape})")
    arr = np.asarray(weights[key])
    if arr.shape != shape:
        raise ValueError(f"weight {key!r} has shape {arr.shape}, the config needs {shape}")
    return arr
