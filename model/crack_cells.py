"""Where a generated photo's cracks fall in the network input, cell by cell (no torch: data preparation only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.preprocess import Letterbox

CELL_PX = 8


def crack_cells(mask: np.ndarray | None, geometry: Letterbox) -> np.ndarray:
    """Crack pixels per input cell: bool ``(H, W)`` mask of the upright photo -> float32 ``(S / CELL_PX, S / CELL_PX)``.

    The mask is resized as the photo is (bilinear) and placed where the letterbox puts the photo, so a cell's value
    is the crack's area in network-input pixels. ``None`` (an intact photo) gives zeros.
    """
    size = geometry.size
    if size % CELL_PX:
        raise ValueError(f"input size {size} is not a multiple of the {CELL_PX} px crack cell")
    n = size // CELL_PX
    if mask is None:
        return np.zeros((n, n), np.float32)
    if mask.shape != (geometry.photo_height, geometry.photo_width):
        raise ValueError(
            f"crack mask of shape {mask.shape} does not match the photo's (H, W) = "
            f"({geometry.photo_height}, {geometry.photo_width})"
        )
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (geometry.new_width, geometry.new_height), Image.Resampling.BILINEAR
    )
    canvas = np.zeros((size, size), np.float32)
    y, x = geometry.pad_y, geometry.pad_x
    canvas[y : y + geometry.new_height, x : x + geometry.new_width] = np.asarray(resized, np.float32) / 255.0
    return canvas.reshape(n, CELL_PX, n, CELL_PX).sum(axis=(1, 3))
