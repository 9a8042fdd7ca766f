"""The rendered photo and how a phone would store it (sensor-oriented pixels plus an EXIF Orientation tag)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model.preprocess import EXIF_TO_UPRIGHT

ORIENTATION_TAG = 0x0112

# What decoding applies for each tag is ``EXIF_TO_UPRIGHT``; this is the inverse that turns the upright photo back
# into the pixels a sensor would have written.
_INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}
FORMATS = ("JPEG", "PNG", "WEBP")


def sensor_pixels(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` (upright) as stored un-rotated under EXIF ``orientation``, so exif_transpose undoes it."""
    if orientation == 1:
        return image
    if orientation not in EXIF_TO_UPRIGHT:
        raise ValueError(f"EXIF orientation must be 1..8, got {orientation}")
    op = EXIF_TO_UPRIGHT[orientation]
    return image.transpose(_INVERSE.get(op, op))


@dataclass(frozen=True, eq=False)
class SynthPhoto:
    """One synthetic ticket photo and everything that was drawn to make it.

    ``image`` is the upright RGB photo as a person sees it. ``crack_mask`` is a bool (H, W) array of crack
    pixels in ``image`` coordinates (``screen_damage`` only). ``screen_box`` is the (x0, y0, x1, y1) box of
    the visible device screen, if any. ``encode`` gives the bytes a phone would upload.
    """

    image: Image.Image
    label: str
    crack_mask: np.ndarray | None
    screen_box: tuple[int, int, int, int] | None
    factors: dict[str, Any] = field(default_factory=dict)
    exif_orientation: int = 1
    jpeg_quality: int = 90

    @property
    def crack_box(self) -> tuple[int, int, int, int] | None:
        """Bounding box (x0, y0, x1, y1) of the crack mask, or None."""
        if self.crack_mask is None or not self.crack_mask.any():
            return None
        ys, xs = np.nonzero(self.crack_mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1

    def encode(self, format: str = "JPEG") -> bytes:
        """The uploaded file: sensor-oriented pixels with the EXIF Orientation tag (JPEG, PNG or WEBP).

        ``PIL.ImageOps.exif_transpose(Image.open(BytesIO(data)))`` restores ``image`` (exactly for PNG).
        """
        fmt = format.upper()
        if fmt == "JPG":
            fmt = "JPEG"
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = self.exif_orientation
        stored = sensor_pixels(self.image, self.exif_orientation)
        buf = io.BytesIO()
        if fmt == "JPEG":
            stored.save(buf, "JPEG", quality=self.jpeg_quality, exif=exif.tobytes())
        elif fmt == "WEBP":
            stored.save(buf, "WEBP", quality=self.jpeg_quality, exif=exif.tobytes())
        else:
            stored.save(buf, "PNG", exif=exif.tobytes(), compress_level=1)
        return buf.getvalue()
