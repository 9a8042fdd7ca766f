"""Effective receptive fields: how much each input pixel really moved one feature-map cell, for this photo.

The theoretical receptive field (``model.receptive_field``) is every pixel a cell *can* depend on. The effective
one is the gradient of the cell's activation with respect to the input, computed by the NumPy backward engine of the
served network (``model.numpy_net`` for the scratch CNN, ``model.numpy_efficientnet`` for EfficientNet-Lite0) on the
weights read from the ONNX file itself (``service.explain.onnx_weights``), so it describes the model ONNX Runtime
serves. Its mass is always inside the theoretical box (a gradient cannot leave it) and is
usually concentrated around the box's centre; the summary quantifies both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.config import NetworkConfig
from model.numpy_efficientnet import LiteTrace, NumpyEfficientNetLite
from model.numpy_engine import NumpyNetwork
from model.numpy_net import BN_EPS, CellTarget, NumpyTriageNet, StageParams, Trace
from model.receptive_field import UnclippedBox
from service.explain.onnx_weights import ConvWeights


def numpy_net(
    config: NetworkConfig, convs: tuple[ConvWeights, ...], head: tuple[np.ndarray, np.ndarray]
) -> NumpyTriageNet:
    """A ``NumpyTriageNet`` running the ONNX file's (batch-norm-folded) convolutions and head.

    The folded weights stand in for the checkpoint's: unit batch-norm scale (``var = 1 - eps``), zero mean.
    """
    if tuple(c.stage for c in convs) != config.stage_names:
        raise ValueError(f"ONNX convolutions {[c.stage for c in convs]} do not match stages {config.stage_names}")
    stages: list[StageParams] = []
    for stage, conv in zip(config.stages, convs, strict=True):
        geometry = (conv.stride, conv.padding, conv.dilation, conv.weight.shape[-1])
        if geometry != (stage.stride, stage.padding, stage.dilation, stage.kernel):
            raise ValueError(f"{stage.name}: ONNX conv (stride, pad, dilation, kernel) {geometry} differs from {stage}")
        w, b = conv.weight.astype(np.float32), conv.bias.astype(np.float32)
        ones, zeros = np.ones_like(b), np.zeros_like(b)
        stages.append(StageParams(stage, w, ones, b, zeros, ones - np.float32(BN_EPS), w, b))
    return NumpyTriageNet(config, tuple(stages), head[0].astype(np.float32), head[1].astype(np.float32))


def numpy_backbone(
    config: NetworkConfig, convs: tuple[ConvWeights, ...], head: tuple[np.ndarray, np.ndarray]
) -> NumpyEfficientNetLite:
    """A ``NumpyEfficientNetLite`` running the ONNX file's convolutions (one per backbone unit, batch-norm folded in,
    ``onnx_weights.unit_convs``) and its linear classifier."""
    folded = {conv.name: (conv.weight, conv.bias) for conv in convs}
    return NumpyEfficientNetLite.from_folded(config, folded, head)


def numpy_engine(
    config: NetworkConfig, convs: tuple[ConvWeights, ...], head: tuple[np.ndarray, np.ndarray]
) -> NumpyNetwork:
    """The NumPy engine of ``config.network`` on the ONNX file's weights."""
    return numpy_net(config, convs, head) if config.backbone is None else numpy_backbone(config, convs, head)


RELU6_CAP = 6.0


def erf_cell(
    channel_map: np.ndarray, sees: np.ndarray, y: int, x: int, activation: str | None
) -> tuple[int, int, str | None]:
    """The cell of ``channel_map (H, W)`` whose effective receptive field to show: the argmax ``(y, x)``, unless it
    sits at the ReLU6 cap, where the activation is flat and no pixel moves it (pretrained EfficientNet-Lite0's stem
    and head maps often peak there, many cells tied at 6). Then the channel's strongest cell below the cap among
    those that see the photo (``sees (H, W)``), with the reason; the argmax when there is none."""
    if activation != "ReLU6" or channel_map[y, x] < RELU6_CAP:
        return y, x, None
    below = np.where(sees & (channel_map < RELU6_CAP) & (channel_map > 0), channel_map, -np.inf)
    if not np.isfinite(below).any():
        return y, x, None
    by, bx = divmod(int(below.argmax()), channel_map.shape[1])
    why = "the strongest cell is capped at 6 by its ReLU6, where no pixel moves it: this is its channel's strongest "
    return by, bx, why + "cell below the cap"


def flat_reason(value: float, activation: str | None) -> str:
    """Why a cell's input gradient is zero everywhere, from its ``value`` and the stage's last ``activation``
    (``"ReLU"``, ``"ReLU6"``, or ``None`` for a linear stage output)."""
    if activation and value <= 0:
        return f"is 0: its {activation} is off"
    if activation == "ReLU6" and value >= RELU6_CAP:
        return "is 6: its ReLU6 is saturated"
    return "depends on no input pixel for this photo"


@dataclass(frozen=True)
class ErfSummary:
    """``gradient``: ``(S, S)`` absolute input gradient summed over colour channels.

    ``in_box``: share of the gradient mass inside the theoretical box; ``in_centre``: share in its centre, the
    pixels whose centres lie in the centred square of half the box's side, which cover ``centre_area`` of the
    box's pixels inside the input (about a quarter); ``radius90``: half-side, in input pixels, of the centred square
    holding 90% of the mass (the box's half-side is ``size / 2``). Shares are ``None`` when the cell did not
    respond to the input at all (its ReLU was off).
    """

    gradient: np.ndarray
    in_box: float | None
    in_centre: float | None
    centre_area: float
    radius90: float | None
    total: float


def summarize(gradient: np.ndarray, box: UnclippedBox) -> ErfSummary:
    """Where the gradient mass of ``gradient (3, S, S)`` lies relative to the cell's theoretical ``box``."""
    mass = np.abs(gradient).sum(axis=0).astype(np.float64)
    ys, xs = np.mgrid[0 : mass.shape[0], 0 : mass.shape[1]] + 0.5  # pixel centres
    cx, cy, half = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, (box.x1 - box.x0) / 2
    inside = (xs >= box.x0) & (xs < box.x1) & (ys >= box.y0) & (ys < box.y1)
    centre = (np.abs(xs - cx) < half / 2) & (np.abs(ys - cy) < half / 2)
    centre_area = float(centre.sum() / max(int(inside.sum()), 1))
    total = float(mass.sum())
    if total <= 0.0:
        return ErfSummary(mass, None, None, centre_area, None, 0.0)
    chebyshev = np.maximum(np.abs(xs - cx), np.abs(ys - cy)).ravel()
    order = np.argsort(chebyshev, kind="stable")
    cumulative = np.cumsum(mass.ravel()[order])
    radius90 = float(chebyshev[order][np.searchsorted(cumulative, 0.9 * cumulative[-1])] + 0.5)
    in_box, in_centre = float(mass[inside].sum() / total), float(mass[centre].sum() / total)
    return ErfSummary(mass, in_box, in_centre, centre_area, radius90, total)


def box_crop(mass: np.ndarray, box: UnclippedBox) -> np.ndarray:
    """``mass (S, S)`` inside ``box`` as a ``(box height, box width)`` array; zero where the box leaves the input."""
    s = mass.shape[0]
    out = np.zeros((box.y1 - box.y0, box.x1 - box.x0), dtype=mass.dtype)
    ya, yb, xa, xb = max(box.y0, 0), min(box.y1, s), max(box.x0, 0), min(box.x1, s)
    if yb > ya and xb > xa:
        out[ya - box.y0 : yb - box.y0, xa - box.x0 : xb - box.x0] = mass[ya:yb, xa:xb]
    return out


class ErfEngine:
    """Traces one input through the NumPy network and differentiates single cells of its stage maps."""

    def __init__(self, net: NumpyNetwork) -> None:
        self.net = net

    def trace(self, tensor: np.ndarray) -> Trace | LiteTrace:
        """Forward pass of ``float32 (3, S, S)`` keeping what ``backward`` needs."""
        return self.net.forward_trace(tensor[np.newaxis])

    def cell_gradient(self, trace: Trace | LiteTrace, stage: str, y: int, x: int, channel: int) -> np.ndarray:
        """``d map[stage][channel, y, x] / d input``: ``float32 (3, S, S)``."""
        return self.net.backward_to_input(trace, CellTarget(stage, y, x, channel))[0]

    @staticmethod
    def max_difference(trace: Trace | LiteTrace, served: dict[str, np.ndarray]) -> float:
        """Largest absolute difference between the NumPy stage maps and ONNX Runtime's ``(C, H, W)`` ones."""
        return max(float(np.abs(trace.maps[name][0] - served[name]).max()) for name in served)
