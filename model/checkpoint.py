"""The checkpoint file: weights as NumPy arrays plus the config, readable with or without torch.

An ``.npz`` whose arrays are the PyTorch ``state_dict`` (same names) and whose ``__meta__`` entry is a JSON
document with the network config (including preprocessing) and training metadata (calibration, seed, ...). A model
that abstains on the unfamiliar also holds its fitted ``model.familiarity.Familiarity`` as float64 arrays named
``__familiarity__.<field>`` (``means``, ``components``, ``weights``, ``inv_residual``, ``threshold``), kept apart from
the weights. Names starting ``__`` are reserved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.config import NetworkConfig
from model.familiarity import Familiarity

_META_KEY = "__meta__"
_FAMILIARITY_PREFIX = "__familiarity__."
_FAMILIARITY_FIELDS = ("means", "components", "weights", "inv_residual", "threshold")


@dataclass(frozen=True)
class Checkpoint:
    config: NetworkConfig
    weights: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    familiarity: Familiarity | None = None  # the fitted distance of abstention on the unfamiliar; None: none


def save_checkpoint(
    path: Path,
    config: NetworkConfig,
    weights: dict[str, np.ndarray],
    meta: dict[str, Any],
    familiarity: Familiarity | None = None,
) -> None:
    """Write weights, config and (when given) the familiarity parameters to ``path`` (an ``.npz``)."""
    reserved = sorted(k for k in weights if k.startswith("__"))
    if reserved:
        raise ValueError(f"weight names starting '__' are reserved, got {reserved}")
    document = json.dumps({"config": config.to_dict(), **meta}, sort_keys=True)
    extra = {}
    if familiarity is not None:
        extra = {
            _FAMILIARITY_PREFIX + name: np.asarray(getattr(familiarity, name), dtype=np.float64)
            for name in _FAMILIARITY_FIELDS
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **{_META_KEY: np.frombuffer(document.encode(), dtype=np.uint8)}, **extra, **weights)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``."""
    with np.load(path, allow_pickle=False) as data:
        if _META_KEY not in data:
            raise ValueError(f"{path} is not a triage checkpoint (no {_META_KEY} entry)")
        meta = json.loads(bytes(data[_META_KEY]).decode())
        weights = {k: data[k] for k in data.files if not k.startswith("__")}
        stored = {k.removeprefix(_FAMILIARITY_PREFIX): data[k] for k in data.files if k.startswith(_FAMILIARITY_PREFIX)}
    config = NetworkConfig.from_dict(meta.pop("config"))
    return Checkpoint(config, weights, meta, _familiarity(path, stored))


def _familiarity(path: Path, stored: dict[str, np.ndarray]) -> Familiarity | None:
    if not stored:
        return None
    missing = [name for name in _FAMILIARITY_FIELDS if name not in stored]
    if missing:
        raise ValueError(f"{path} holds familiarity parameters without {missing}")
    return Familiarity(
        means=stored["means"],
        components=stored["components"],
        weights=stored["weights"],
        inv_residual=float(stored["inv_residual"]),
        threshold=float(stored["threshold"]),
    )
