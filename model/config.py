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
    """The CNN: named stages, then a global pool over space and a linear head.

    ``global_pool`` is ``"avg"`` (global average pooling, the shipped model) or ``"max"`` (each channel's largest
    response anywhere in the photo). Max learns faster on short budgets and ends level with the average on the full
    one (``bench/global_pool.py`` and ``docs/BENCHMARKS.md``).
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

    def __post_init__(self) -> None:
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {self.global_pool!r}")

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def layers(self) -> tuple[LayerGeometry, ...]:
        """Every spatial layer in order (ReLU and batch-norm are pointwise and do not change geometry)."""
        out: list[LayerGeometry] = []
        for s in self.stages:
            out.append(LayerGeometry(f"{s.name}.conv", s.name, "conv", s.kernel, s.stride, s.padding, s.dilation))
            if s.pool:
                out.append(LayerGeometry(f"{s.name}.pool", s.name, "maxpool", s.pool, s.pool, 0))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": [asdict(s) for s in self.stages],
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.to_dict(),
            "global_pool": self.global_pool,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        return cls(
            stages=tuple(Stage(**s) for s in data["stages"]),
            in_channels=int(data["in_channels"]),
            num_classes=int(data["num_classes"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            global_pool=str(data.get("global_pool", "avg")),  # artifacts written before the field existed averaged
        )
