"""The NumPy engine for whichever network a config names: ``NumpyTriageNet`` for ``network="scratch"``,
``NumpyEfficientNetLite`` for the pretrained backbone. Both give ``forward``, ``forward_trace``, ``backward``,
``backward_to_input`` and ``loss_and_gradients`` with one API."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.checkpoint import load_checkpoint
from model.config import NetworkConfig
from model.numpy_efficientnet import NumpyEfficientNetLite
from model.numpy_net import NumpyTriageNet

NumpyNetwork = NumpyTriageNet | NumpyEfficientNetLite


def numpy_network(
    config: NetworkConfig, weights: dict[str, np.ndarray], dtype: type[np.floating] = np.float32
) -> NumpyNetwork:
    """The NumPy engine for ``config.network`` built from ``state_dict``-named arrays (batch-norm folded)."""
    if config.backbone is None:
        return NumpyTriageNet.from_weights(config, weights, dtype=dtype)
    return NumpyEfficientNetLite.from_weights(config, weights, dtype=dtype)


def load_numpy_network(path: Path, dtype: type[np.floating] = np.float32) -> NumpyNetwork:
    """The NumPy engine for the network an ``.npz`` checkpoint (``model.checkpoint.save_checkpoint``) holds."""
    ckpt = load_checkpoint(Path(path))
    return numpy_network(ckpt.config, ckpt.weights, dtype=dtype)
