"""The checkpoint file: weights as NumPy arrays plus the config, readable with or without torch.

An ``.npz`` whose arrays are the PyTorch ``state_dict`` (same names) and whose ``__meta__`` entry is a JSON
document with the network config (including preprocessing) and training metadata (calibration, seed, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.config import NetworkConfig

_META_KEY = "__meta__"


@dataclass(frozen=True)
class Checkpoint:
    config: NetworkConfig
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: Path, config: NetworkConfig, weights: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write weights and config to ``path`` (an ``.npz``)."""
    if _META_KEY in weights:
        raise ValueError(f"weight name {_META_KEY!r} is reserved")
    document = json.dumps({"config": config.to_dict(), **meta}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **{_META_KEY: np.frombuffer(document.encode(), dtype=np.uint8)}, **weights)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``."""
    with np.load(path, allow_pickle=False) as data:
        if _META_KEY not in data:
            raise ValueError(f"{path} is not a triage checkpoint (no {_META_KEY} entry)")
        meta = json.loads(bytes(data[_META_KEY]).decode())
        weights = {k: data[k] for k in data.files if k != _META_KEY}
    config = NetworkConfig.from_dict(meta.pop("config"))
    return Checkpoint(config, weights, meta)
