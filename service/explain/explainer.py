"""One photo's explanation from the outputs the served ONNX model computed for it.

Per stage (``stageN``, an ONNX output of shape ``(1, C, H, W)``): the top-K channels by peak activation with
their statistics, the map's argmax cell and the receptive-field box of that cell in uploaded-photo pixels
(``[x0, y0, x1, y1]``, upright after EXIF orientation, letterbox and resize undone, rounded outward and clipped;
``model.receptive_field`` is the reference), the box of every row and column of cells (so any cell's box is
``[xs[x][0], ys[y][0], xs[x][1], ys[y][1]]``), the argmax cell's own ``footprint`` (its ``jump``-sided square), and
each channel as a colour-mapped PNG, an array, or both.

The class-activation map is exact for this network: it is each cell's contribution to the logit, so that
``sum(cam) + b[k] == logit[k]``. With ``A`` the last stage's map ``(C, H, W)`` and the head ``W``, ``b`` (the ONNX
file's initializers): under global max pooling the logit is ``W[k] @ max_hw(A) + b[k]``, so channel ``c``
contributes ``W[k, c] * max(A[c])`` at the cell where its maximum is (shared evenly between tied cells); under
global average pooling (the shipped model) it is ``W[k] @ mean_hw(A) + b[k]``, so ``cam = W[k] . A / (H * W)``.
The map is overlaid on the photo and its peak cell's box is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.config import LOGITS_NAME
from model.familiarity import UNFAMILIARITY_NAME
from model.preprocess import Letterbox, Prepared
from model.receptive_field import Field, UnclippedBox, stage_fields
from service.explain import pictures as img
from service.explain.erf import ErfEngine, box_crop, erf_cell, flat_reason, numpy_engine, summarize
from service.explain.onnx_weights import OnnxGraph, head_weights, read_onnx, stage_convs, unit_convs
from service.explain.options import ExplainOptions
from service.explain.stages import network_summary, stage_notes
from service.inference.routing import Decision

LOGITS = LOGITS_NAME


@dataclass(frozen=True)
class CellBoxes:
    """Photo-pixel extents of every column ``x (W, 2)`` and row ``y (H, 2)`` of cells: clipped (int) and not."""

    x: np.ndarray
    y: np.ndarray
    x_unclipped: np.ndarray
    y_unclipped: np.ndarray

    def box(self, y: int, x: int) -> list[int]:
        """Cell ``(y, x)``'s clipped box ``[x0, y0, x1, y1]``."""
        return [int(self.x[x, 0]), int(self.y[y, 0]), int(self.x[x, 1]), int(self.y[y, 1])]

    def sees_photo(self) -> np.ndarray:
        """``bool (H, W)``: whether cell ``(y, x)``'s clipped box holds at least one photo pixel."""
        wide = self.x[:, 1] > self.x[:, 0]
        tall = self.y[:, 1] > self.y[:, 0]
        return tall[:, None] & wide[None, :]

    def box_unclipped(self, y: int, x: int) -> list[float]:
        return [
            float(self.x_unclipped[x, 0]),
            float(self.y_unclipped[y, 0]),
            float(self.x_unclipped[x, 1]),
            float(self.y_unclipped[y, 1]),
        ]


def _axis(field: Field, count: int, pad: int, photo_side: int, new_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Clipped ``int (count, 2)`` and unclipped ``float (count, 2)`` photo extents of one axis's cells."""
    edges = field.first_edge + np.arange(count, dtype=np.float64) * field.jump
    unclipped = (np.stack([edges, edges + field.size], axis=1) - pad) * photo_side / new_side
    lo = np.clip(np.floor(unclipped[:, 0]), 0, photo_side)
    hi = np.clip(np.ceil(unclipped[:, 1]), 0, photo_side)
    return np.stack([lo, hi], axis=1).astype(np.int64), unclipped


def cell_boxes(field: Field, geo: Letterbox) -> CellBoxes:
    """Every cell's receptive field in the upright photo, as ``cell_field_in_photo`` computes it, vectorised."""
    h, w = field.out_size
    x, xu = _axis(field, w, geo.pad_x, geo.photo_width, geo.new_width)
    y, yu = _axis(field, h, geo.pad_y, geo.photo_height, geo.new_height)
    return CellBoxes(x, y, xu, yu)


def footprint(field: Field, y: int, x: int, geo: Letterbox) -> list[int]:
    """Cell ``(y, x)``'s own square in the upright photo, ``[x0, y0, x1, y1]``: one ``jump`` wide, centred on the cell
    (``start + i * jump``) as its receptive field is, so neighbouring cells' footprints tile the input. Where a cell
    *looks* is its receptive field; where it *sits* is this (for the last stage, 32 of the 265 pixels)."""
    cx, cy = field.start + x * field.jump, field.start + y * field.jump
    half = field.jump / 2
    return list(geo.clip_to_photo(geo.box_to_photo((cx - half, cy - half, cx + half, cy + half))))


def _round(values: np.ndarray, digits: int = 5) -> list[Any]:
    return np.round(values.astype(np.float64), digits).tolist()


class Explainer:
    """Everything about the model an explanation needs, read once from the ONNX file."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.config = graph.network_config()
        self.stages = tuple(name for name in graph.outputs if name not in (LOGITS, UNFAMILIARITY_NAME))
        if self.stages != self.config.stage_names:
            raise ValueError(f"ONNX outputs {self.stages} do not match the network's stages {self.config.stage_names}")
        self.classes = tuple(json.loads(graph.metadata.get("classes", "[]"))) or self.config.preprocessing.classes
        self.fields = stage_fields(self.config)
        self.notes = stage_notes(self.config)
        backbone = self.config.backbone
        self._activation = {name: "ReLU" for name in self.stages}  # what each stage output ends with
        if backbone is not None:
            ends = {"stem": backbone.stem, "head": backbone.head}
            self._activation = {name: "ReLU6" if name in ends and ends[name].relu6 else None for name in self.stages}
        self.head_w, self.head_b, self.cam_stage, self.pool = head_weights(graph, LOGITS)
        if self.pool != self.config.global_pool:
            raise ValueError(f"the ONNX head pools by {self.pool}; its metadata says {self.config.global_pool}")
        self._convs = stage_convs(graph, self.stages) if backbone is None else unit_convs(graph, backbone)
        self._erf: ErfEngine | None = None

    @classmethod
    def from_onnx(cls, path: Path) -> Explainer:
        return cls(read_onnx(path))

    @property
    def erf_engine(self) -> ErfEngine:
        if self._erf is None:
            self._erf = ErfEngine(numpy_engine(self.config, self._convs, (self.head_w, self.head_b)))
        return self._erf

    def explain(
        self, prepared: Prepared, outputs: dict[str, np.ndarray], decision: Decision, options: ExplainOptions
    ) -> dict[str, Any]:
        """The explanation of one photo; ``outputs`` holds ``logits (K,)`` and each stage ``(C, H, W)``."""
        layers = options.resolved_layers(self.stages)
        geo = prepared.geometry
        photo = prepared.photo
        display = img.display_size(photo.width, photo.height)
        trace = self.erf_engine.trace(prepared.tensor) if options.erf else None
        entries = []
        for name in layers:
            entry, argmax, boxes = self._layer(name, outputs[name], geo, options)
            if trace is not None:
                entry["erf"] = self._erf_entry(trace, name, argmax, boxes)
            entries.append(entry)
        result: dict[str, Any] = {
            **decision.to_dict(),
            "photo": {
                "width": photo.width,
                "height": photo.height,
                "orientation": photo.orientation,
                "format": photo.format,
            },
            "letterbox": {
                "size": geo.size,
                "new_width": geo.new_width,
                "new_height": geo.new_height,
                "pad_x": geo.pad_x,
                "pad_y": geo.pad_y,
            },
            "display": {"width": display[0], "height": display[1]},
            "network": network_summary(self.config),
            "layers": entries,
            "cam": self._cam(outputs, geo, photo.image, display, options),
        }
        if trace is not None:
            result["erf_check"] = {"numpy_onnx_max_abs_diff": ErfEngine.max_difference(trace, outputs_of(outputs))}
        return result

    def _layer(
        self, name: str, maps: np.ndarray, geo: Letterbox, options: ExplainOptions
    ) -> tuple[dict[str, Any], tuple[int, int, int], CellBoxes]:
        c, h, w = maps.shape
        field = self.fields[name]
        boxes = cell_boxes(field, geo)
        flat = maps.reshape(c, h * w)
        means, active = flat.mean(axis=1), (flat > 0).mean(axis=1)
        # Peaks and argmax cells among the cells that see the photo: a cell whose field lies in the letterbox padding
        # responds to the pad colour alone (the same value for every photo) and has an empty box in the photo.
        sees = boxes.sees_photo().reshape(h * w)
        seen = np.where(sees, flat, -np.inf) if sees.any() else flat
        peaks, cells = seen.max(axis=1), seen.argmax(axis=1)
        order = np.argsort(-peaks, kind="stable")[: options.channels]
        channels = []
        for k in order.tolist():
            y, x = divmod(int(cells[k]), w)
            entry: dict[str, Any] = {
                "index": k,
                "max": float(peaks[k]),
                "mean": float(means[k]),
                "fraction_active": float(active[k]),
                "argmax": [y, x],
                "box": boxes.box(y, x),
            }
            if options.pictures:
                entry["png"] = img.png_base64(img.feature_map_image(maps[k]))
            if options.arrays:
                entry["values"] = _round(maps[k])
            channels.append(entry)
        top = int(order[0])
        y, x = divmod(int(cells[top]), w)
        entry = {
            "name": name,
            "about": self.notes[name],
            "shape": [c, h, w],
            "receptive_field": {
                "size": field.size,
                "jump": field.jump,
                "start": field.start,
                "first_edge": field.first_edge,
            },
            "argmax": {
                "channel": top,
                "cell": [y, x],
                "value": float(peaks[top]),
                "box": boxes.box(y, x),
                "box_unclipped": boxes.box_unclipped(y, x),
                "footprint": footprint(field, y, x, geo),
            },
            "cell_boxes": {"x": boxes.x.tolist(), "y": boxes.y.tolist()},
            "upscale": img.upscale_factor(h, w),
            "channels": channels,
        }
        return entry, (top, y, x), boxes

    def _cam(
        self,
        outputs: dict[str, np.ndarray],
        geo: Letterbox,
        photo: Image.Image,
        display: tuple[int, int],
        options: ExplainOptions,
    ) -> dict[str, Any]:
        k = int(np.argmax(outputs[LOGITS]))
        cam = logit_contributions(self.head_w[k], outputs[self.cam_stage], self.pool)
        field = self.fields[self.cam_stage]
        boxes = cell_boxes(field, geo)
        sees = boxes.sees_photo()
        y, x = divmod(int(np.where(sees, cam, -np.inf).argmax() if sees.any() else cam.argmax()), cam.shape[1])
        heat = img.grid_to_photo(img.scaled(cam), field.start, field.jump, geo, display)
        result: dict[str, Any] = {
            "class": self.classes[k],
            "layer": self.cam_stage,
            "about": self.notes[self.cam_stage],
            "shape": list(cam.shape),
            "values": _round(cam, 9),  # each cell's share of the logit: small numbers
            "peak": {
                "cell": [y, x],
                "value": float(cam[y, x]),
                "box": boxes.box(y, x),
                "box_unclipped": boxes.box_unclipped(y, x),
                "footprint": footprint(field, y, x, geo),
            },
            "logit": float(outputs[LOGITS][k]),
            "pool": self.pool,
            "sum_plus_bias": float(cam.sum() + self.head_b[k]),
        }
        if options.pictures:
            result["overlay_png"] = img.png_base64(img.overlay(photo, heat))
        return result

    def _erf_entry(self, trace: Any, name: str, argmax: tuple[int, int, int], boxes: CellBoxes) -> dict[str, Any]:
        """The effective receptive field of the argmax cell (or, when that cell sits at its ReLU6 cap where no pixel
        moves it, of its channel's strongest uncapped cell: ``erf_cell``); ``png`` is the input-gradient magnitude
        over exactly the theoretical box (network-input pixels, nearest-upscaled), so where inside it acts is
        visible."""
        channel = argmax[0]
        activation = self._activation[name]
        y, x, moved = erf_cell(trace.maps[name][0, channel], boxes.sees_photo(), argmax[1], argmax[2], activation)
        field = self.fields[name]
        x0, y0 = field.first_edge + x * field.jump, field.first_edge + y * field.jump
        box = UnclippedBox(x0, y0, x0 + field.size, y0 + field.size)
        summary = summarize(self.erf_engine.cell_gradient(trace, name, y, x, channel), box)
        value = float(trace.maps[name][0, channel, y, x])
        return {
            "cell": [y, x],
            "channel": channel,
            "value": value,
            "cell_chosen_because": moved,
            "box": boxes.box(y, x),
            "mass_in_box": summary.in_box,
            "mass_in_centre": summary.in_centre,
            "centre_area": summary.centre_area,
            "radius90": summary.radius90,
            "box_half_side": field.size / 2,
            "flat_because": None if summary.in_box is not None else flat_reason(value, activation),
            "png": img.png_base64(img.feature_map_image(box_crop(summary.gradient, box), img.INFERNO)),
        }


def logit_contributions(weights: np.ndarray, maps: np.ndarray, pool: str) -> np.ndarray:
    """Each cell's share of ``weights (C,) @ global_pool(maps (C, H, W))``: ``(H, W)``, float64, summing to it."""
    maps = maps.astype(np.float64)
    w = weights.astype(np.float64)
    if pool == "avg":
        return np.einsum("c,chw->hw", w, maps) / (maps.shape[1] * maps.shape[2])  # no BLAS: see grid_to_photo
    if pool != "max":
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    peaks = maps.max(axis=(1, 2), keepdims=True)
    at_peak = maps == peaks
    share = at_peak / at_peak.sum(axis=(1, 2), keepdims=True)
    return np.einsum("c,chw->hw", w * peaks[:, 0, 0], share)


def outputs_of(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stage maps of ``outputs`` (everything but the logits)."""
    return {name: value for name, value in outputs.items() if name not in (LOGITS, UNFAMILIARITY_NAME)}
