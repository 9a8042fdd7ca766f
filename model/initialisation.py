"""Where training starts: a fresh scratch network, the ImageNet-pretrained backbone, or an earlier model's checkpoint.

The pretrained backbone is fine-tuned, not trained whole: the stem and blocks 0-10 stay as ImageNet left them (no
gradients; their batch norms keep the pretrained running statistics), blocks 11-15, the 1x1 head and a new
two-class classifier learn. ``--from DIR`` starts from the checkpoint in ``DIR`` (its network, preprocessing and
weights, classifier included) with the same freezing for the backbone; a scratch checkpoint trains whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.card import CHECKPOINT_NAME, sha256_file
from model.checkpoint import load_checkpoint
from model.config import NetworkConfig
from model.efficientnet import EfficientNetLite
from model.network import Network, build_network, load_numpy_state

FROZEN_BLOCKS = 11  # the stem and blocks 0-10 of the backbone stay fixed

# Learning rates (AdamW, OneCycle peak) when none is given: training from random weights takes larger steps than
# adjusting weights that already work.
SCRATCH_LR = 3e-3
FINE_TUNE_LR = 1e-3


class StartError(ValueError):
    """``--from`` names no checkpoint, or one of another network than the one asked for."""


@dataclass(frozen=True)
class Start:
    """The network to train (on CPU, in train mode) and what the card records about where it came from."""

    net: Network
    record: dict[str, Any]
    lr: float


def checkpoint_path(source: Path) -> Path:
    """``source`` itself if it is a file, else the checkpoint inside the model folder ``source``."""
    return source if source.is_file() else source / CHECKPOINT_NAME


def start_network(config: NetworkConfig, seed: int, source: Path | None = None) -> Start:
    """The network ``config`` describes (or ``source``'s checkpoint) ready to train, frozen where it should be.

    With ``source``, ``config.network`` must name the checkpoint's network, and ``source`` must hold a checkpoint;
    StartError otherwise.
    """
    if source is not None:
        path = checkpoint_path(source)
        if not path.is_file():
            raise StartError(f"--from {source}: no checkpoint {path.name} there")
        checkpoint = load_checkpoint(path)
        if checkpoint.config.network != config.network:
            raise StartError(
                f"--from {source} holds a {checkpoint.config.network} network, not {config.network}; "
                f"give --network {checkpoint.config.network} or leave --network out"
            )
        net = load_numpy_state(build_network(checkpoint.config), checkpoint.weights)
        record: dict[str, Any] = {
            "kind": "checkpoint",
            "checkpoint": str(path),
            "sha256": sha256_file(path),
            **({"pretrained": checkpoint.meta["initialisation"]} if "initialisation" in checkpoint.meta else {}),
        }
        lr = FINE_TUNE_LR
    elif config.network == "scratch":
        net = build_network(config, seed=seed)
        record = {"kind": "random", "seed": seed}
        lr = SCRATCH_LR
    else:
        from model.pretrained import provenance

        net = build_network(config, seed=seed, pretrained=True)
        record = {"kind": "pretrained", **provenance()}
        lr = FINE_TUNE_LR
    if isinstance(net, EfficientNetLite):
        net.freeze(FROZEN_BLOCKS)
        record["frozen"] = f"stem and blocks.0-{FROZEN_BLOCKS - 1} (batch norms in eval mode)"
    record["trainable_parameters"] = int(sum(p.numel() for p in net.parameters() if p.requires_grad))
    return Start(net.train(), record, lr)
