"""Central finite differences, the independent check of every hand-written backward pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_grad(f: Callable[[], float], arr: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to every element of ``arr`` (modified in place, then
    restored); ``arr`` should be float64."""
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        keep = arr[idx]
        arr[idx] = keep + eps
        hi = f()
        arr[idx] = keep - eps
        lo = f()
        arr[idx] = keep
        grad[idx] = (hi - lo) / (2 * eps)
    return grad
