"""Photo intake: bytes -> validated, decoded, preprocessed photo, or an ``IntakeError`` with its HTTP status.

Shared by the HTTP service (``/v1/route``, ``/v1/explain``) and in-process ``triage predict``. The order matters:

1. the type is sniffed from the magic bytes (never the filename or the declared content type): JPEG, PNG, WebP,
   HEIC/HEIF; anything else is 415;
2. the byte limit (413), then the pixel count and the longest side from the image header *before* any pixel is
   decoded, so a decompression bomb or a hair-thin strip costs nothing (413);
3. decoding and preprocessing with exactly the functions training uses (``model.preprocess``): EXIF orientation,
   CMYK/palette/alpha/16-bit/grayscale to RGB, first frame of animations; a JPEG is decoded at a DCT-reduced scale
   unless ``fast=False``. Empty, truncated or corrupt data is 422.
"""

from __future__ import annotations

import io
import re
import struct
import time
import warnings
from dataclasses import dataclass

from PIL import Image

from model.config import Preprocessing
from model.preprocess import Prepared, decode_photo, letterbox, normalize  # registers the HEIC/HEIF opener

# What Pillow raises on corrupt or truncated data, across its plugins and pillow-heif. Anything else is a bug.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
# Pillow names the in-memory file in some messages ("cannot identify image file <_io.BytesIO object at 0x...>").
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")

# Pillow refuses to open an image over twice ``Image.MAX_IMAGE_PIXELS`` with its own message, "Image size (N pixels)
# exceeds limit of ...": the only place its size is then given. Pinned by tests/service/test_intake.py.
_PILLOW_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

SUPPORTED_TYPES = ("JPEG", "PNG", "WebP", "HEIC/HEIF")
_PILLOW_FORMAT = {"JPEG": "JPEG", "PNG": "PNG", "WebP": "WEBP", "HEIC/HEIF": "HEIF"}


class IntakeError(ValueError):
    """A photo that cannot be routed, with the HTTP status that says why (413, 415, 422) and a metric reason."""

    def __init__(self, status: int, message: str, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    def to_dict(self) -> dict[str, int | str]:
        return {"status": self.status, "message": self.message}

    def __reduce__(self) -> tuple[type[IntakeError], tuple[int, str, str]]:
        # Crosses process boundaries (HTTP server -> inference worker) inside queued requests.
        return (IntakeError, (self.status, self.message, self.reason))


def _undecodable(kind: str, exc: BaseException) -> IntakeError:
    return IntakeError(422, f"{kind} image cannot be decoded: {_OBJECT_REPR.sub('', str(exc))}", "undecodable")


def pixel_limit(max_pixels: int) -> int:
    """The largest pixel count a photo may have: ``max_pixels``, or less if Pillow refuses smaller images."""
    pillow = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow is None else min(max_pixels, 2 * int(pillow))


def _too_many_pixels(size: str, max_pixels: int) -> IntakeError:
    """The one wording for a photo over the pixel limit, whether the service or Pillow noticed."""
    return IntakeError(413, f"image is {size} pixels; the limit is {pixel_limit(max_pixels)} pixels", "too_many_pixels")


def _refused_by_pillow(exc: Image.DecompressionBombError, max_pixels: int) -> IntakeError:
    """Pillow's decompression-bomb refusal in the service's words (its message is the only place the size is)."""
    found = _PILLOW_BOMB_SIZE.search(str(exc))
    size = found.group(1) if found else f"more than {pixel_limit(max_pixels)}"
    return _too_many_pixels(size, max_pixels)


@dataclass(frozen=True)
class IntakeLimits:
    """``max_side``: no photo is that thin. Pillow keeps a pointer per image row and copies whole rows, so a
    1 x 50,000,000 PNG (194 KB, within the pixel limit) cost 3.8 s and 1.3 GB to decode and letterbox, against
    0.9 s and 0.2 GB for a square of the same pixel count. Panoramas stay well within 32,768 pixels a side."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 32_768


def sniff_type(data: bytes) -> str | None:
    """The image type named by the file's magic bytes (one of ``SUPPORTED_TYPES``), or ``None``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if len(data) >= 16 and data[4:8] == b"ftyp":
        box_size = int.from_bytes(data[:4], "big")
        end = min(max(box_size, 16), len(data), 4096)
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
        if brands & _HEIF_BRANDS and not brands & _AVIF_BRANDS:
            return "HEIC/HEIF"
    return None


def check_photo(data: bytes, limits: IntakeLimits) -> str:
    """Everything that can be checked without decoding pixels; returns the sniffed type or raises ``IntakeError``."""
    if not data:
        raise IntakeError(422, "empty file", "empty")
    kind = sniff_type(data)
    if kind is None:
        raise IntakeError(
            415, f"not a supported image type (expected {', '.join(SUPPORTED_TYPES)})", "unsupported_type"
        )
    if len(data) > limits.max_bytes:
        raise IntakeError(413, f"file is {len(data)} bytes; the limit is {limits.max_bytes}", "too_large")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[kind]]) as header:
                width, height = header.size
        except Image.DecompressionBombError as exc:
            raise _refused_by_pillow(exc, limits.max_pixels) from exc
        except _DECODE_ERRORS as exc:
            raise _undecodable(kind, exc) from exc
    if width * height > pixel_limit(limits.max_pixels):
        raise _too_many_pixels(f"{width}x{height}", limits.max_pixels)
    if max(width, height) > limits.max_side:
        raise IntakeError(
            413, f"image is {width}x{height} pixels; no side may be longer than {limits.max_side}", "too_many_pixels"
        )
    return kind


def read_photo(
    data: bytes, spec: Preprocessing, limits: IntakeLimits, *, fast: bool = True
) -> tuple[Prepared, dict[str, float]]:
    """Validate and preprocess one photo; returns it with ``decode``/``preprocess`` timings in seconds.

    The tensor is what training's evaluation computes for the same bytes (``model.preprocess.prepare``):
    ``fast=True`` decodes JPEGs in the DCT domain at the smallest scale still covering the network input, as
    ``prepare`` does by default; ``fast=False`` decodes every pixel.
    """
    t0 = time.perf_counter()
    kind = check_photo(data, limits)
    try:
        with warnings.catch_warnings():  # the pixel count is checked: Pillow's warning above 89 MP says nothing new
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            photo = decode_photo(data, draft_to=spec.size if fast else None, draft=spec.jpeg_draft)
    except Image.DecompressionBombError as exc:
        raise _refused_by_pillow(exc, limits.max_pixels) from exc
    except _DECODE_ERRORS as exc:
        raise _undecodable(kind, exc) from exc
    t1 = time.perf_counter()
    pixels, geo = letterbox(photo, spec)
    tensor = normalize(pixels, spec)
    t2 = time.perf_counter()
    return Prepared(tensor, pixels, geo, photo), {"decode": t1 - t0, "preprocess": t2 - t1}
