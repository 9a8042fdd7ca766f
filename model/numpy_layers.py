"""Pointwise and dense NumPy layers: ReLU, ReLU6, residual add, inference batch-norm, global max and average pooling,
linear, softmax cross-entropy, batch-norm folding.

Same contract as ``model.numpy_ops``: ``*_forward`` returns ``(out, cache)``, ``*_backward`` takes
``(dout, cache)``, and outputs keep the input dtype.
"""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)`` elementwise, any shape such as ``(N, C, H, W)``; the cache is the mask ``x > 0``."""
    mask = x > 0
    return np.where(mask, x, np.zeros((), dtype=x.dtype)), mask


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Pass ``dout`` where the input was strictly positive; zero elsewhere (including at exactly 0, like PyTorch)."""
    if dout.shape != cache.shape:
        raise ValueError(f"dout shape {dout.shape} does not match ReLU input shape {cache.shape}")
    return np.where(cache, dout, np.zeros((), dtype=dout.dtype))


def relu6_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``min(max(x, 0), 6)`` elementwise, any shape such as ``(N, C, H, W)``; the cache is the mask ``0 < x < 6``."""
    return np.clip(x, np.zeros((), dtype=x.dtype), np.asarray(6, dtype=x.dtype)), (x > 0) & (x < 6)


def relu6_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Pass ``dout`` where ``0 < x < 6``; zero elsewhere, at exactly 0 and 6 too (``torch.nn.functional.relu6``)."""
    if dout.shape != cache.shape:
        raise ValueError(f"dout shape {dout.shape} does not match ReLU6 input shape {cache.shape}")
    return np.where(cache, dout, np.zeros((), dtype=dout.dtype))


def residual_add_forward(x: np.ndarray, skip: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x + skip`` for two arrays of one shape, such as ``(N, C, H, W)`` (no broadcasting); the cache is the shape."""
    if x.shape != skip.shape:
        raise ValueError(f"residual add needs equal shapes, got x {x.shape} and skip {skip.shape}")
    return x + skip, x.shape


def residual_add_backward(dout: np.ndarray, cache: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Both branches receive ``dout`` whole: returns ``(dx, dskip)``, each of the forward shape."""
    if dout.shape != cache:
        raise ValueError(f"dout shape {dout.shape} does not match residual shape {cache}")
    return dout, dout.copy()


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float = 1e-5
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Inference batch-norm of ``x (N, C, H, W)`` with running statistics: ``(x - mean) / sqrt(var + eps) * gamma +
    beta``, each of ``gamma, beta, mean, var`` ``(C,)``. ``eps`` is the layer's (1e-5 in PyTorch, 1e-3 in
    EfficientNet-Lite). The cache is ``(x_hat (N, C, H, W), gamma / sqrt(var + eps) (C,))``.
    """
    if x.ndim != 4:
        raise ValueError(f"batch-norm expects x (N, C, H, W), got shape {x.shape}")
    for name, vec in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        if vec.shape != (x.shape[1],):
            raise ValueError(f"batch-norm {name} shape {vec.shape} does not match x shape {x.shape}")
    if eps < 0:
        raise ValueError(f"batch-norm eps must be >= 0, got {eps}")
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
    x_hat = (x - mean.astype(x.dtype)[:, None, None]) * inv_std[:, None, None]
    out = x_hat * gamma.astype(x.dtype)[:, None, None] + beta.astype(x.dtype)[:, None, None]
    return out, (x_hat, (gamma.astype(x.dtype) * inv_std))


def batchnorm_backward(
    dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dout (N, C, H, W)`` -> ``(dx (N, C, H, W), dgamma (C,), dbeta (C,))``; the running statistics are
    constants in inference, so ``dx = dout * gamma / sqrt(var + eps)``."""
    x_hat, scale = cache
    if dout.shape != x_hat.shape:
        raise ValueError(f"dout shape {dout.shape} does not match batch-norm shape {x_hat.shape}")
    return dout * scale[:, None, None], (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Mean over space: ``(N, C, H, W)`` -> ``(N, C)``; the cache is the input shape."""
    if x.ndim != 4:
        raise ValueError(f"global average pooling expects (N, C, H, W), got shape {x.shape}")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dout: np.ndarray, cache: tuple[int, int, int, int]) -> np.ndarray:
    """Spread each ``dout (N, C)`` value evenly over its ``H x W`` map: returns ``(N, C, H, W)``."""
    n, c, h, w = cache
    if dout.shape != (n, c):
        raise ValueError(f"dout shape {dout.shape} does not match pooled shape {(n, c)}")
    scaled = dout / np.asarray(h * w, dtype=dout.dtype)
    return np.ascontiguousarray(np.broadcast_to(scaled[:, :, None, None], cache))


def global_max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Maximum over space: ``(N, C, H, W)`` -> ``(N, C)``; the cache holds where each maximum was reached.

    The cache is ``(mask (N, C, H, W), count (N, C))``: every position equal to its map's maximum, and how many.
    """
    if x.ndim != 4:
        raise ValueError(f"global max pooling expects (N, C, H, W), got shape {x.shape}")
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"global max pooling needs a non-empty map, got shape {x.shape}")
    out = x.max(axis=(2, 3))
    mask = x == out[:, :, None, None]
    return out, (mask, mask.sum(axis=(2, 3)))


def global_max_pool_backward(dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Route each ``dout (N, C)`` value to its map's maximum: returns ``(N, C, H, W)``.

    Where several positions tie for the maximum the gradient is split evenly between them, as PyTorch's ``amax``
    does.
    """
    mask, count = cache
    if dout.shape != count.shape:
        raise ValueError(f"dout shape {dout.shape} does not match pooled shape {count.shape}")
    share = dout / count.astype(dout.dtype)
    return np.where(mask, share[:, :, None, None], np.zeros((), dtype=dout.dtype))


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``x (N, D) @ w.T + b`` with ``w (K, D)`` (PyTorch layout) and ``b (K,)`` -> ``(N, K)``."""
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1] or b.shape != (w.shape[0],):
        raise ValueError(f"linear expects x (N, D), w (K, D), b (K,); got {x.shape}, {w.shape}, {b.shape}")
    return x @ w.T + b, (x, w)


def linear_backward(
    dout: np.ndarray, cache: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dout (N, K)`` -> ``(dx (N, D), dw (K, D), db (K,))``."""
    x, w = cache
    if dout.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dout shape {dout.shape} does not match linear output shape {(x.shape[0], w.shape[0])}")
    return dout @ w, dout.T @ x, dout.sum(axis=0)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits (N, K)`` against integer ``labels (N,)`` and its gradient ``(N, K)``.

    Uses the max-shifted log-sum-exp, so large logits do not overflow. ``dlogits = (softmax - onehot) / N``.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    n, k = logits.shape
    if n == 0 or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k}) for logits shape {logits.shape}")
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean()
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1.0
    return float(loss), (grad / n).astype(logits.dtype)


def batchnorm_fold(
    w: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = 1e-5,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference batch-norm into the preceding convolution ``w (F, C, KH, KW)`` (optional ``bias (F,)``).

    ``BN(conv(x, w) + bias) = conv(x, w * s) + (bias - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
    Computed in float64 and returned in ``w``'s dtype as ``(w' (F, C, KH, KW), b' (F,))``.
    """
    f = w.shape[0]
    for name, vec in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        if vec.shape != (f,):
            raise ValueError(f"batch-norm {name} shape {vec.shape} does not match conv weight shape {w.shape}")
    if bias is not None and bias.shape != (f,):
        raise ValueError(f"conv bias shape {bias.shape} does not match conv weight shape {w.shape}")
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shift = (0.0 if bias is None else bias.astype(np.float64)) - mean.astype(np.float64)
    w_folded = w.astype(np.float64) * scale.reshape(f, *([1] * (w.ndim - 1)))
    b_folded = shift * scale + beta.astype(np.float64)
    return w_folded.astype(w.dtype), b_folded.astype(w.dtype)


def batchnorm_fold_backward(
    dw_folded: np.ndarray,
    db_folded: np.ndarray,
    w: np.ndarray,
    gamma: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients through ``batchnorm_fold`` (no conv bias): ``dw' (F, C, KH, KW)``, ``db' (F,)`` ->
    ``(dw (F, C, KH, KW), dgamma (F,), dbeta (F,))``.

    With ``s = gamma / sqrt(var + eps)``, ``w' = w * s`` and ``b' = beta - mean * s``: ``dw = dw' * s``,
    ``dgamma = (sum(dw' * w) - db' * mean) / sqrt(var + eps)`` and ``dbeta = db'``. Computed in float64, returned
    in ``dw'``'s dtype.
    """
    f = w.shape[0]
    if dw_folded.shape != w.shape or db_folded.shape != (f,):
        raise ValueError(f"folded gradients {dw_folded.shape}, {db_folded.shape} do not match conv weight {w.shape}")
    for name, vec in (("gamma", gamma), ("mean", mean), ("var", var)):
        if vec.shape != (f,):
            raise ValueError(f"batch-norm {name} shape {vec.shape} does not match conv weight shape {w.shape}")
    dw, db = dw_folded.astype(np.float64), db_folded.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    scale = gamma.astype(np.float64) * inv_std
    axes = tuple(range(1, w.ndim))
    dscale = (dw * w.astype(np.float64)).sum(axis=axes) - db * mean.astype(np.float64)
    out = (dw * scale.reshape(f, *([1] * (w.ndim - 1))), dscale * inv_std, db)
    return tuple(a.astype(dw_folded.dtype) for a in out)  # type: ignore[return-value]
