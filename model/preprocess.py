"""Photo -> network input, defined once and shared by training, export, serving and the NumPy engine.

Plain NumPy and Pillow (no torch), so the serving image can use it. The steps:

1. ``decode_photo``: bytes -> upright RGB ``PIL.Image`` (EXIF orientation applied, CMYK/palette/alpha/16-bit/
   grayscale converted, first frame of animations). With ``draft_to`` a JPEG is decoded in the DCT domain at
   the coarsest power-of-two reduction that still covers ``size x size`` (``jpeg_draft="square"``, the shipped
   rule) or the letterboxed network input (``"letterbox"``), which is what makes 12 MP phone photos cheap.
2. ``letterbox``: scale the long side to ``spec.size``, centre, pad with the mean colour -> ``uint8 (S, S, 3)``.
3. ``normalize``: ``uint8 (..., S, S, 3)`` -> ``float32 (..., 3, S, S)`` with the spec's mean and std.

``Letterbox`` keeps the geometry so network-input coordinates map back to uploaded-photo pixels.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pillow_heif
from PIL import Image

from model.config import JPEG_DRAFTS, Preprocessing

pillow_heif.register_heif_opener()  # HEIC/HEIF photos decode wherever photos are decoded: training and serving

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)


@dataclass(frozen=True)
class Photo:
    """An upright photo. ``image`` may be a DCT-downscaled draft; ``width``/``height`` are the full upright size."""

    image: Image.Image
    width: int
    height: int
    orientation: int = 1
    format: str | None = None


@dataclass(frozen=True)
class Letterbox:
    """Where the photo sits inside the ``size x size`` network input.

    The photo (``photo_width x photo_height``, upright) is resized to ``new_width x new_height`` and pasted at
    ``(pad_x, pad_y)``.
    """

    photo_width: int
    photo_height: int
    size: int
    new_width: int
    new_height: int
    pad_x: int
    pad_y: int

    def input_to_photo(self, x: float, y: float) -> tuple[float, float]:
        """Map a point in network-input pixel coordinates to uploaded-photo pixel coordinates."""
        return (
            (x - self.pad_x) * self.photo_width / self.new_width,
            (y - self.pad_y) * self.photo_height / self.new_height,
        )

    def box_to_photo(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map ``[x0, y0, x1, y1)`` (input pixel edges) to photo pixel edges, unclipped."""
        x0, y0 = self.input_to_photo(box[0], box[1])
        x1, y1 = self.input_to_photo(box[2], box[3])
        return (x0, y0, x1, y1)

    def clip_to_photo(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """Round a photo-space box outward to whole pixels and clip it to the photo."""
        x0 = int(np.clip(np.floor(box[0]), 0, self.photo_width))
        y0 = int(np.clip(np.floor(box[1]), 0, self.photo_height))
        x1 = int(np.clip(np.ceil(box[2]), 0, self.photo_width))
        y1 = int(np.clip(np.ceil(box[3]), 0, self.photo_height))
        return (x0, y0, x1, y1)


def letterbox_geometry(width: int, height: int, size: int) -> Letterbox:
    """The letterbox placement of a ``width x height`` photo in a ``size x size`` input."""
    if width < 1 or height < 1 or size < 1:
        raise ValueError(f"letterbox needs positive sizes, got photo {width}x{height} and input {size}")
    scale = size / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    return Letterbox(width, height, size, new_w, new_h, (size - new_w) // 2, (size - new_h) // 2)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha is composited on white, 16-bit and float are rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def draft_size(width: int, height: int, draft_to: int, rule: str) -> tuple[int, int]:
    """The smallest ``(w, h)`` a ``width x height`` JPEG may be DCT-reduced to (``Preprocessing.jpeg_draft``):
    ``"letterbox"`` covers the photo letterboxed into ``draft_to`` (long side ``draft_to``, the short side in
    proportion, rounded up); ``"square"`` covers ``draft_to`` on both sides. Orientation does not matter: the
    long side is the long side either way."""
    if rule == "square":
        return draft_to, draft_to
    if rule != "letterbox":
        raise ValueError(f"jpeg_draft must be one of {JPEG_DRAFTS}, got {rule!r}")
    scale = draft_to / max(width, height)
    return math.ceil(width * scale), math.ceil(height * scale)


# File names of the photo formats the service accepts (JPEG, PNG, WebP, HEIC/HEIF): what folders are searched for.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})

# How each EXIF orientation is undone (what ``ImageOps.exif_transpose`` does, which raises on a malformed tag).
EXIF_TO_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1-8; 1 (as stored) when the tag is missing or unusable (text, NaN, out of range):
    a malformed tag does not make the pixels unreadable."""
    try:
        value = int(image.getexif().get(0x0112, 1) or 1)
    except (TypeError, ValueError, OverflowError, SyntaxError, EOFError, struct.error):
        # an unreadable EXIF block (Pillow raises SyntaxError for "not a TIFF file", struct.error when cut short)
        return 1
    return value if 1 <= value <= 8 else 1


def decode_photo(data: bytes, *, draft_to: int | None = None, draft: str = "square") -> Photo:
    """Decode image bytes into an upright RGB photo.

    ``draft_to``: if given and the file is a JPEG, decode at the coarsest DCT scale (1/2, 1/4, 1/8) whose size
    still covers ``draft_size(..., draft_to, draft)``. Raises ``PIL.UnidentifiedImageError``/``OSError`` on bad data.
    """
    image = Image.open(io.BytesIO(data))
    fmt = image.format
    orientation = exif_orientation(image)
    full_w, full_h = image.size
    if orientation in _ROTATING_ORIENTATIONS:
        full_w, full_h = full_h, full_w
    if draft_to is not None and fmt == "JPEG":
        image.draft("RGB", draft_size(*image.size, draft_to, draft))
    image.load()
    upright = image.transpose(EXIF_TO_UPRIGHT[orientation]) if orientation in EXIF_TO_UPRIGHT else image
    return Photo(to_rgb(upright), full_w, full_h, orientation, fmt)


def letterbox(photo: Photo, spec: Preprocessing) -> tuple[np.ndarray, Letterbox]:
    """Resize and pad the photo into the network input: ``uint8 (size, size, 3)`` and its geometry."""
    if spec.resize != "letterbox":
        raise ValueError(f"unsupported resize policy {spec.resize!r}; this version knows 'letterbox'")
    geo = letterbox_geometry(photo.width, photo.height, spec.size)
    resized = photo.image.resize((geo.new_width, geo.new_height), _RESAMPLE[spec.interpolation])
    colour = np.asarray(spec.pad_colour, dtype=np.uint8)
    top, left = geo.pad_y, geo.pad_x
    bottom, right = top + geo.new_height, left + geo.new_width
    canvas = np.empty((spec.size, spec.size, 3), dtype=np.uint8)
    canvas[:top] = colour  # only the padding is filled: the photo covers the rest
    canvas[bottom:] = colour
    canvas[top:bottom, :left] = colour
    canvas[top:bottom, right:] = colour
    canvas[top:bottom, left:right] = np.asarray(resized)
    return canvas, geo


@lru_cache(maxsize=8)
def _normalized_values(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``float32 (3, 256)``: ``(v / 255 - mean[c]) / std[c]`` for every channel ``c`` and byte value ``v``."""
    values = np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
    table = (values - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(table.T)


def normalize(pixels: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """``uint8 (..., H, W, 3)`` -> ``float32 (..., 3, H, W)``: ``(x / 255 - mean) / std``.

    Each output value is looked up in a table of the 256 results per channel, computed with the same float32
    operations, so the result is bit for bit the formula's, at a quarter of its cost.
    """
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise ValueError(f"normalize expects uint8 (..., H, W, 3), got {pixels.dtype} {pixels.shape}")
    table = _normalized_values(spec.mean, spec.std)
    planes = np.moveaxis(pixels, -1, -3)
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(3):
        np.take(table[c], planes[..., c, :, :], out=out[..., c, :, :], mode="clip")  # uint8 indices: all in range
    return out


@dataclass(frozen=True)
class Prepared:
    """A photo ready for the network: ``tensor`` is ``float32 (3, S, S)``."""

    tensor: np.ndarray
    pixels: np.ndarray
    geometry: Letterbox
    photo: Photo


def prepare(data: bytes, spec: Preprocessing, *, fast: bool = True) -> Prepared:
    """The whole eval-time path: bytes -> upright photo -> letterbox -> normalised tensor.

    ``fast`` uses DCT-domain downscaled JPEG decoding (never below the network input size).
    """
    photo = decode_photo(data, draft_to=spec.size if fast else None, draft=spec.jpeg_draft)
    pixels, geo = letterbox(photo, spec)
    return Prepared(normalize(pixels, spec), pixels, geo, photo)
