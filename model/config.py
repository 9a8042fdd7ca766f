"""The model's configuration: network stages and preprocessing, as frozen dataclasses.

The preprocessing spec travels with the model artifact (checkpoint, ONNX metadata and model card), so
training, export, serving and the NumPy engine all read it from one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

CLASSES: tuple[str, str] = ("screen_damage", "general_returns")
NEEDS_REVIEW = "needs_review"
RESIZE_POLICIES = ("letterbox",)
INTERPOLATIONS = ("bilinear", "bicubic")
JPEG_DRAFTS = ("letterbox", "square")
INPUT_NAME = "input"  # the ONNX model's input; its outputs are LOGITS_NAME and one feature map per stage
LOGITS_NAME = "logits"


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the network input tensor ``(3, size, size)``.

    ``resize="letterbox"`` keeps the aspect ratio: the photo's long side is scaled to ``size`` and the short
    side is centred and padded with the mean colour (which is 0 after normalisation).

    ``jpeg_draft`` is how far a JPEG may be reduced in the DCT domain before the resize (``model.preprocess``):
    ``"square"``, as far as still covers ``size x size`` (a 640x480 photo decodes whole for a 256 input; the shipped
    model's rule, and what ``from_dict`` reads for artifacts written before the field existed), or
    ``"letterbox"``, as far as still covers the letterboxed photo (the same photo decodes at 320x240, its decode and
    resize in 42% less time; ``docs/BENCHMARKS.md`` has one training with each).
    """

    size: int = 256
    resize: str = "letterbox"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    classes: tuple[str, ...] = CLASSES
    jpeg_draft: str = "square"

    def __post_init__(self) -> None:
        # A model card is a file: a value no code path handles must fail when the model loads, not per photo.
        for name, value, allowed in (
            ("resize", self.resize, RESIZE_POLICIES),
            ("interpolation", self.interpolation, INTERPOLATIONS),
            ("jpeg_draft", self.jpeg_draft, JPEG_DRAFTS),
        ):
            if value not in allowed:
                raise ValueError(f"preprocessing {name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.size < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0 or not self.classes:
            raise ValueError(
                f"preprocessing needs size >= 1, 3 means, 3 positive stds and classes; got size={self.size}, "
                f"mean={self.mean}, std={self.std}, classes={self.classes}"
            )

    @property
    def pad_colour(self) -> tuple[int, int, int]:
        """The letterbox padding as RGB bytes: the mean colour, which normalises to (nearly) 0."""
        r, g, b = (round(m * 255) for m in self.mean)
        return r, g, b

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            resize=str(data["resize"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            interpolation=str(data.get("interpolation", "bilinear")),
            classes=tuple(data["classes"]),
            jpeg_draft=str(data.get("jpeg_draft", "square")),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class Stage:
    """One named stage: ``conv(kernel, stride, padding, dilation) -> batch-norm -> ReLU [-> max-pool]``."""

    name: str
    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    pool: int = 2  # max-pool kernel == stride; 0 means no pooling


@dataclass(frozen=True)
class LayerGeometry:
    """A spatial layer as the receptive-field recurrences see it."""

    name: str
    stage: str
    kind: str  # "conv" or "maxpool"
    kernel: int
    stride: int
    padding: int
    dilation: int = 1


@dataclass(frozen=True)
class ConvBN:
    """``conv(kernel, stride, padding kernel // 2, groups, no bias) -> batch-norm [-> ReLU6]``.

    Its weights are ``{name}.conv.weight`` ``(out, in / groups, k, k)`` and ``{name}.bn.{weight,bias,running_mean,
    running_var,num_batches_tracked}``. ``groups == in_channels == out_channels`` is a depthwise convolution.
    """

    name: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    relu6: bool = True

    @property
    def padding(self) -> int:
        return self.kernel // 2

    def geometry(self, stage: str) -> LayerGeometry:
        return LayerGeometry(self.name, stage, "conv", self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class InvertedResidual:
    """An MBConv block ``name`` (``blocks.i``) of stage group ``stage``: ``[expand 1x1 -> BN -> ReLU6] -> depthwise
    kxk/stride -> BN -> ReLU6 -> project 1x1 -> BN`` (no activation), plus the input when ``residual``.

    The expansion is left out when ``expand == 1`` (no ``{name}.expand`` weights).
    """

    name: str
    stage: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int

    @property
    def hidden(self) -> int:
        return self.in_channels * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    def convs(self) -> tuple[ConvBN, ...]:
        """The block's convolutions in order: ``expand`` (if any), ``depthwise``, ``project``."""
        hidden = self.hidden
        expand = (ConvBN(f"{self.name}.expand", self.in_channels, hidden),) if self.expand != 1 else ()
        return (
            *expand,
            ConvBN(f"{self.name}.depthwise", hidden, hidden, self.kernel, self.stride, groups=hidden),
            ConvBN(f"{self.name}.project", hidden, self.out_channels, relu6=False),
        )


@dataclass(frozen=True)
class Backbone:
    """A mobile backbone: ``stem`` (stage ``"stem"``), inverted-residual ``blocks`` (stages ``stage1``...), ``head``
    (a 1x1 ConvBN, stage ``"head"``); then a global average pool and the linear ``classifier`` (weights
    ``classifier.weight`` ``(K, C)``, ``classifier.bias``). Every batch-norm uses ``bn_eps``.
    """

    name: str
    stem: ConvBN
    blocks: tuple[InvertedResidual, ...]
    head: ConvBN
    bn_eps: float = 1e-3

    def units(self) -> tuple[tuple[str, ConvBN], ...]:
        """Every ConvBN in execution order with its stage name (residual adds are not listed)."""
        return (
            ("stem", self.stem),
            *((block.stage, conv) for block in self.blocks for conv in block.convs()),
            ("head", self.head),
        )

    @property
    def stage_names(self) -> tuple[str, ...]:
        return ("stem", *dict.fromkeys(b.stage for b in self.blocks), "head")

    def stage_channels(self) -> dict[str, int]:
        out = {"stem": self.stem.out_channels}
        out.update({b.stage: b.out_channels for b in self.blocks})
        return {**out, "head": self.head.out_channels}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backbone:
        return cls(
            name=str(data["name"]),
            stem=ConvBN(**data["stem"]),
            blocks=tuple(InvertedResidual(**b) for b in data["blocks"]),
            head=ConvBN(**data["head"]),
            bn_eps=float(data["bn_eps"]),
        )


# (repeats, kernel, stride of the first block, expansion, output channels) per stage group of EfficientNet-Lite0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def efficientnet_lite0(in_channels: int = 3) -> Backbone:
    """EfficientNet-Lite0: stem 3x3/2 to 32 channels, 16 inverted-residual blocks, 1x1 head to 1280 channels."""
    blocks: list[InvertedResidual] = []
    channels = 32
    for group, (repeats, kernel, stride, expand, out) in enumerate(LITE0_STAGES, start=1):
        for r in range(repeats):
            blocks.append(
                InvertedResidual(
                    f"blocks.{len(blocks)}", f"stage{group}", channels, out, kernel, stride if r == 0 else 1, expand
                )
            )
            channels = out
    return Backbone(
        name="efficientnet_lite0",
        stem=ConvBN("stem", in_channels, 32, kernel=3, stride=2),
        blocks=tuple(blocks),
        head=ConvBN("head", channels, 1280),
    )


NETWORKS = ("scratch", "efficientnet_lite0")
# The normalisation the pretrained weights were trained with (TensorFlow's 127 / 128 for the Lite models); it scores
# a held photo's ImageNet class higher than the torchvision mean / std (tests/model/test_pretrained.py).
PRETRAINED_MEAN: tuple[float, float, float] = (127 / 255, 127 / 255, 127 / 255)
PRETRAINED_STD: tuple[float, float, float] = (128 / 255, 128 / 255, 128 / 255)
PRETRAINED_SIZE = 256  # the input side: 1.3 points more accurate than 224 for 31% more network time (BENCHMARKS)


def preprocessing_for(network: str, jpeg_draft: str = "square") -> Preprocessing:
    """The preprocessing a new model of ``network`` trains with: the scratch network's defaults, or the pretrained
    weights' normalisation at ``PRETRAINED_SIZE``."""
    if network == "scratch":
        return Preprocessing(jpeg_draft=jpeg_draft)
    return Preprocessing(size=PRETRAINED_SIZE, mean=PRETRAINED_MEAN, std=PRETRAINED_STD, jpeg_draft=jpeg_draft)


# The network shipped before the current default: one convolution per stage. The short-budget comparisons in
# docs/BENCHMARKS.md were measured with it and keep it as their base (``bench/short_runs.py``).
SIX_STAGES: tuple[Stage, ...] = (
    Stage("stage1", 24, stride=2),
    Stage("stage2", 48),
    Stage("stage3", 64),
    Stage("stage4", 96),
    Stage("stage5", 128, pool=0),
    Stage("stage6", 128, pool=0),
)

GLOBAL_POOLS = ("avg", "max")


@dataclass(frozen=True)
class NetworkConfig:
    """The CNN: ``network`` names the architecture; then a global pool over space and a linear head.

    ``network="scratch"``: the from-scratch CNN of named ``stages`` (conv -> BN -> ReLU [-> max-pool]). ``global_pool``
    is ``"avg"`` (global average pooling, the shipped model) or ``"max"`` (each channel's largest response anywhere in
    the photo). Max learns faster on short budgets and ends level with the average on the full one
    (``bench/global_pool.py`` and ``docs/BENCHMARKS.md``).

    ``network="efficientnet_lite0"``: the ImageNet-pretrained ``backbone`` (``efficientnet_lite0()``), whose stages
    are ``stem``, ``stage1``..``stage7`` and ``head``; ``stages`` is then empty and the pool is the average.
    """

    stages: tuple[Stage, ...] = (
        Stage("stage1", 24, stride=2),
        Stage("stage2", 48),
        Stage("stage3", 64, pool=0),
        Stage("stage4", 64),
        Stage("stage5", 96, pool=0),
        Stage("stage6", 96),
        Stage("stage7", 128, pool=0),
        Stage("stage8", 128, pool=0),
    )
    in_channels: int = 3
    num_classes: int = len(CLASSES)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    global_pool: str = "avg"
    network: str = "scratch"

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")
        if self.network != "scratch":
            if self.global_pool != "avg":
                raise ValueError(f"the {self.network} network pools by average, got global_pool={self.global_pool!r}")
            object.__setattr__(self, "stages", ())  # the backbone's stages are fixed by its pretrained weights

    @property
    def backbone(self) -> Backbone | None:
        """The pretrained architecture, or None for the from-scratch network."""
        return efficientnet_lite0(self.in_channels) if self.network == "efficientnet_lite0" else None

    @property
    def stage_names(self) -> tuple[str, ...]:
        backbone = self.backbone
        return backbone.stage_names if backbone else tuple(s.name for s in self.stages)

    def stage_channels(self) -> dict[str, int]:
        """Output channels of each stage's map, by stage name, in order."""
        backbone = self.backbone
        return backbone.stage_channels() if backbone else {s.name: s.channels for s in self.stages}

    def layers(self) -> tuple[LayerGeometry, ...]:
        """Every spatial layer in order (ReLU, ReLU6, batch-norm and residual adds are pointwise or join two paths
        whose fields nest, so they do not change the maximal geometry); 1x1 convolutions are listed too."""
        backbone = self.backbone
        if backbone:
            return tuple(conv.geometry(stage) for stage, conv in backbone.units())
        out: list[LayerGeometry] = []
        for s in self.stages:
            out.append(LayerGeometry(f"{s.name}.conv", s.name, "conv", s.kernel, s.stride, s.padding, s.dilation))
            if s.pool:
                out.append(LayerGeometry(f"{s.name}.pool", s.name, "maxpool", s.pool, s.pool, 0))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "network": self.network,
            "stages": [asdict(s) for s in self.stages],
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.to_dict(),
            "global_pool": self.global_pool,
        }
        backbone = self.backbone
        if backbone:
            out["backbone"] = backbone.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        config = cls(
            stages=tuple(Stage(**s) for s in data["stages"]),
            in_channels=int(data["in_channels"]),
            num_classes=int(data["num_classes"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            global_pool=str(data.get("global_pool", "avg")),  # artifacts written before the field existed averaged
            network=str(data.get("network", "scratch")),  # ... and were the from-scratch network
        )
        if "backbone" in data and Backbone.from_dict(data["backbone"]) != config.backbone:
            raise ValueError(f"the recorded {config.network} architecture differs from the one this code builds")
        return config
