"""Receptive fields of the triage CNN: which input (and uploaded-photo) pixels each feature-map cell can see.

Coordinates: pixel ``i`` covers the interval ``[i, i + 1)``, so its centre is ``i + 0.5``; boxes are half-open
``[x0, x1) x [y0, y1)`` in pixel edges. Starting from the input (``r = 1``, ``jump = 1``, ``start = 0.5``), each
layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` (effective kernel ``k_eff = d (k - 1) + 1``)
updates::

    jump_out  = jump_in * s
    r_out     = r_in + (k_eff - 1) * jump_in
    start_out = start_in + ((k_eff - 1) / 2 - p) * jump_in

and the output length is ``floor((H + 2p - d (k - 1) - 1) / s) + 1``. Cell ``i`` is centred at
``start + i * jump`` and its box is ``[start + i * jump - r / 2, start + i * jump + r / 2)``, whose edges are whole
numbers (``first_edge`` tracks the left edge of cell 0 with ``first_edge_out = first_edge_in - p * jump_in``).
ReLU and batch-norm are pointwise and leave all of this unchanged. Without dilation the box is the set of pixels a
cell *can* depend on; for a given input, ReLU zeros and max-pool winners use a subset of it. With dilation that set
is a lattice with holes and the box its bounding box; clipped to the input, the box may then keep a border strip
no tap reaches (the shipped network has no dilation).

The unclipped box may extend past the input (into the zero padding); the clipped box is its intersection with
the input. ``cell_field_in_photo`` maps a box to the upright uploaded photo through the letterbox geometry (the
photo's EXIF orientation is already undone by decoding, so the upright photo is the reference frame).
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import NetworkConfig
from model.numpy_ops import conv_output_size
from model.preprocess import Letterbox


@dataclass(frozen=True)
class Field:
    """Receptive field after one layer (or at the end of a stage) for a given input size ``(H, W)``."""

    name: str
    stage: str
    size: int  # r: side of the box, in input pixels
    jump: int  # distance between neighbouring cells, in input pixels
    start: float  # centre of cell (0, 0) in input pixel coordinates
    first_edge: int  # top/left edge of cell (0, 0)'s box: start - size / 2
    out_size: tuple[int, int]  # (H, W) of this layer's output


@dataclass(frozen=True)
class UnclippedBox:
    """``[x0, x1) x [y0, y1)`` in input pixels; may extend past the input into the padding."""

    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class ClippedBox:
    """``[x0, x1) x [y0, y1)`` in whole pixels, inside the image it was clipped to."""

    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class PhotoBox:
    """``[x0, x1) x [y0, y1)`` in upright-photo pixel edges (fractional), unclipped."""

    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class CellField:
    """One cell's receptive field in the network input: ``box`` (unclipped) and ``clipped`` (to the input)."""

    stage: str
    y: int
    x: int
    box: UnclippedBox
    clipped: ClippedBox


@dataclass(frozen=True)
class PhotoCellField:
    """One cell's receptive field in the uploaded photo: ``box`` unclipped, ``clipped`` rounded out and clipped."""

    cell: CellField
    box: PhotoBox
    clipped: ClippedBox


@dataclass(frozen=True)
class TableRow:
    """A model-card row: the stage's output ``shape (C, H, W)`` for the configured input size and its field."""

    name: str
    shape: tuple[int, int, int]
    size: int
    jump: int
    start: float


def _input_hw(config: NetworkConfig, input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if input_size is None:
        return config.preprocessing.size, config.preprocessing.size
    return (input_size, input_size) if isinstance(input_size, int) else input_size


def layer_fields(config: NetworkConfig, input_size: int | tuple[int, int] | None = None) -> tuple[Field, ...]:
    """The field after every spatial layer of ``config.layers()``; input size defaults to the preprocessing size.

    Raises ValueError when a layer's (dilated) kernel does not fit its input.
    """
    h, w = _input_hw(config, input_size)
    size, jump, start, edge = 1, 1, 0.5, 0
    fields: list[Field] = []
    for layer in config.layers():
        k_eff = layer.dilation * (layer.kernel - 1) + 1
        h = conv_output_size(h, layer.kernel, layer.stride, 2 * layer.padding, layer.dilation)
        w = conv_output_size(w, layer.kernel, layer.stride, 2 * layer.padding, layer.dilation)
        start += ((k_eff - 1) / 2 - layer.padding) * jump
        edge -= layer.padding * jump
        size += (k_eff - 1) * jump
        jump *= layer.stride
        fields.append(Field(layer.name, layer.stage, size, jump, start, edge, (h, w)))
    return tuple(fields)


def stage_fields(config: NetworkConfig, input_size: int | tuple[int, int] | None = None) -> dict[str, Field]:
    """The field at the end of each stage (the stage's output map), by stage name."""
    return {f.stage: f for f in layer_fields(config, input_size)}


def cell_field(
    config: NetworkConfig, stage: str, y: int, x: int, input_size: int | tuple[int, int] | None = None
) -> CellField:
    """The input box of cell ``(y, x)`` of ``stage``'s map, unclipped and clipped to the input."""
    fields = stage_fields(config, input_size)
    if stage not in fields:
        raise ValueError(f"unknown stage {stage!r}; the network has {list(fields)}")
    f = fields[stage]
    if not (0 <= y < f.out_size[0] and 0 <= x < f.out_size[1]):
        raise ValueError(f"cell ({y}, {x}) is outside {stage}'s map of size {f.out_size}")
    h, w = _input_hw(config, input_size)
    x0, y0 = f.first_edge + x * f.jump, f.first_edge + y * f.jump
    box = UnclippedBox(x0, y0, x0 + f.size, y0 + f.size)
    clipped = ClippedBox(max(box.x0, 0), max(box.y0, 0), min(box.x1, w), min(box.y1, h))
    return CellField(stage, y, x, box, clipped)


def cell_field_in_photo(config: NetworkConfig, stage: str, y: int, x: int, letterbox: Letterbox) -> PhotoCellField:
    """Cell ``(y, x)`` of ``stage`` mapped to the upright photo behind ``letterbox`` (resize and padding undone).

    The unclipped photo box maps the unclipped input box's edges; the clipped one rounds it outward to whole
    photo pixels and clips it to the photo (``Letterbox.clip_to_photo``). This is geometry only: the bilinear
    resize also lets photo pixels just outside the box touch its border pixels.
    """
    if letterbox.size != config.preprocessing.size:
        raise ValueError(f"letterbox size {letterbox.size} differs from the input size {config.preprocessing.size}")
    cell = cell_field(config, stage, y, x)
    mapped = letterbox.box_to_photo((cell.box.x0, cell.box.y0, cell.box.x1, cell.box.y1))
    return PhotoCellField(cell, PhotoBox(*mapped), ClippedBox(*letterbox.clip_to_photo(mapped)))


def table(config: NetworkConfig) -> list[TableRow]:
    """Per-stage rows (name, output shape for the configured input size, r, jump, start) for the model card."""
    channels = config.stage_channels()
    return [
        TableRow(name, (channels[name], *f.out_size), f.size, f.jump, f.start)
        for name, f in stage_fields(config).items()
    ]


def format_table(rows: list[TableRow]) -> str:
    """The rows as a Markdown table."""
    lines = ["| stage | output (C, H, W) | receptive field r | jump | start |", "|---|---|---|---|---|"]
    lines += [f"| {r.name} | {r.shape} | {r.size} | {r.jump} | {r.start:g} |" for r in rows]
    return "\n".join(lines)
