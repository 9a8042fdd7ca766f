"""Where a feature-map cell lies in the uploaded photo: its receptive-field box and its own footprint.

Boxes are in uploaded-photo pixels (``[x0, y0, x1, y1]``, upright after EXIF orientation, letterbox and resize
undone, rounded outward and clipped); ``model.receptive_field`` is the reference they are mapped from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.preprocess import Letterbox
from model.receptive_field import Field


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
