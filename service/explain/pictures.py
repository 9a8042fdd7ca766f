"""Pictures of what the network computed: colour-mapped feature maps, heatmaps resampled to the photo, overlays.

Plain NumPy and Pillow. Feature maps are upscaled with nearest neighbour so each cell stays a visible square; the
class-activation map, which lives on a grid of cell centres, is resampled into uploaded-photo coordinates through
the letterbox geometry, so it lines up with the receptive-field boxes, which are in the same coordinates (effective
receptive fields are drawn in network-input pixels over their box, ``service.explain.erf``).
"""

from __future__ import annotations

import base64
import io
from dataclasses import replace

import numpy as np
from PIL import Image

from model.preprocess import Letterbox, Photo

# Anchor colours of two perceptually ordered maps, interpolated to 256 entries: viridis for feature maps
# (dark blue = 0, yellow = the channel's maximum) and inferno for heatmaps (black = none, yellow = most).
_VIRIDIS = ((68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
            (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37))  # fmt: skip
_INFERNO = ((0, 0, 4), (27, 12, 65), (74, 12, 107), (120, 28, 109), (165, 44, 96),
            (207, 68, 70), (237, 105, 37), (251, 155, 6), (247, 209, 61), (252, 255, 164))  # fmt: skip
DISPLAY_LONG_SIDE = 512
MAP_MIN_SIDE = 128


def _lut(anchors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    at = np.linspace(0.0, 1.0, len(anchors))
    grid = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(grid, at, [a[c] for a in anchors]) for c in range(3)], axis=1)
    return np.round(table).astype(np.uint8)


VIRIDIS = _lut(_VIRIDIS)
INFERNO = _lut(_INFERNO)
_RAMP = np.linspace(0.0, 1.0, 256) ** 0.7  # heat -> opacity of the overlay colour


def scaled(values: np.ndarray) -> np.ndarray:
    """Divide by the maximum (values below 0 become 0); an all-zero map stays zero. ``(H, W)`` -> ``(H, W)``."""
    positive = np.maximum(values, 0.0)
    peak = float(positive.max(initial=0.0))
    return positive / peak if peak > 0 else np.zeros_like(positive)


def upscale_factor(height: int, width: int, min_side: int = MAP_MIN_SIDE) -> int:
    """The whole-number factor that brings a ``height x width`` map's long side to at least ``min_side``."""
    return max(1, -(-min_side // max(height, width, 1)))


def _index(values: np.ndarray) -> np.ndarray:
    """``float [0, 1]`` -> ``uint8`` colour-table index."""
    return np.clip(np.nan_to_num(values) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _paletted(index: np.ndarray, lut: np.ndarray) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(index), "P")
    image.putpalette(lut.tobytes())
    return image


def feature_map_image(channel: np.ndarray, lut: np.ndarray = VIRIDIS) -> Image.Image:
    """One map ``(H, W)`` -> an image ``(W*f, H*f)`` (0 to its maximum through ``lut``), nearest-neighbour upscaled
    by ``upscale_factor``. Paletted (one byte per pixel): the same picture as RGB at a third of the encoding work.
    """
    f = upscale_factor(*channel.shape)
    index = np.repeat(np.repeat(_index(scaled(channel)), f, axis=0), f, axis=1)
    return _paletted(index, lut)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """An image (or ``uint8 (H, W, 3)``) -> PNG file bytes, compressed fast: these are answers, not archives.

    In the image's own mode: a paletted feature map stays one byte per pixel, an overlay stays full colour (a
    256-colour palette showed as bands across the heatmap's smooth gradients; RGB costs about four times the bytes
    and encoding time, 330 KB and 60 ms for a 512 x 384 overlay).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def png_base64(image: Image.Image | np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def display_size(width: int, height: int, long_side: int = DISPLAY_LONG_SIDE) -> tuple[int, int]:
    """The overlay's size for a ``width x height`` photo: the photo's own size, or scaled to ``long_side``."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def for_display(photo: Photo) -> Photo:
    """``photo`` with its image already at ``display_size``: all an explanation draws on (the overlay), and what a
    queued request holds instead of up to 50 decoded megapixels (150 MB) until its batch has run."""
    size = display_size(photo.width, photo.height)
    if photo.image.size == size:
        return photo
    return replace(photo, image=photo.image.convert("RGB").resize(size, Image.Resampling.BILINEAR))


def _input_positions(display: int, photo_side: int, new_side: int, pad: int) -> np.ndarray:
    """Network-input coordinates of the centres of ``display`` pixels spanning a photo side of ``photo_side``."""
    centres = (np.arange(display) + 0.5) * photo_side / display
    return pad + centres * new_side / photo_side


def _interp(positions: np.ndarray, first: float, step: float, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For samples at ``first + i * step``: the neighbours ``lo``, ``hi`` and weight of ``hi`` at ``positions``."""
    t = np.clip((positions - first) / step, 0.0, count - 1)
    lo = np.floor(t).astype(np.intp)
    return lo, np.minimum(lo + 1, count - 1), t - lo


def grid_to_photo(grid: np.ndarray, start: float, jump: float, geo: Letterbox, size: tuple[int, int]) -> np.ndarray:
    """Resample cell values ``(H, W)`` (cell ``i`` centred at input coordinate ``start + i * jump``) to the photo.

    Returns ``(size[1], size[0])``: bilinear between cell centres, constant beyond the outermost ones, evaluated at
    the centre of every pixel of the photo drawn at ``size`` (width, height). Gathers, not matrix products: small
    BLAS calls next to ONNX Runtime's thread pool cost far more than the arithmetic.
    """
    xs = _input_positions(size[0], geo.photo_width, geo.new_width, geo.pad_x)
    ys = _input_positions(size[1], geo.photo_height, geo.new_height, geo.pad_y)
    x_lo, x_hi, fx = _interp(xs, start, jump, grid.shape[1])
    y_lo, y_hi, fy = _interp(ys, start, jump, grid.shape[0])
    g = grid.astype(np.float32)
    rows = g[y_lo] * (1.0 - fy[:, None]).astype(np.float32) + g[y_hi] * fy[:, None].astype(np.float32)
    return rows[:, x_lo] * (1.0 - fx).astype(np.float32) + rows[:, x_hi] * fx.astype(np.float32)


def overlay(photo: Image.Image, heat: np.ndarray, opacity: float = 0.6) -> Image.Image:
    """An inferno heatmap ``heat (h, w)`` in ``[0, 1]`` blended over ``photo`` resized to ``(w, h)``.

    Cold areas keep the photo; the opacity grows with the heat (``opacity * heat ** 0.7``) so the strongest
    evidence stands out.
    """
    h, w = heat.shape
    base = photo.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    index = _index(heat)
    colour = _paletted(index, INFERNO).convert("RGB")
    alpha = Image.fromarray(np.round(255.0 * opacity * _RAMP).astype(np.uint8)[index], "L")
    return Image.composite(colour, base, alpha)
