"""Photo intake: bytes -> validated, decoded, preprocessed photo, or an ``IntakeError`` with its HTTP status."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from model.config import Preprocessing
from model.preprocess import Prepared, decode_photo, letterbox, normalize


class IntakeError(ValueError):
    """A photo that cannot be routed, with the HTTP status that says why (413, 415, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class IntakeLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000


def read_photo(data: bytes, spec: Preprocessing, limits: IntakeLimits) -> tuple[Prepared, dict[str, float]]:
    """Validate and preprocess one photo; returns it with decode/preprocess timings in seconds."""
    if not data:
        raise IntakeError(422, "empty file")
    if len(data) > limits.max_bytes:
        raise IntakeError(413, f"file is {len(data)} bytes; the limit is {limits.max_bytes}")
    t0 = time.perf_counter()
    try:
        photo = decode_photo(data, draft_to=spec.size)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise IntakeError(415, f"not a supported image: {exc}") from exc
    except OSError as exc:
        raise IntakeError(422, f"image cannot be decoded: {exc}") from exc
    t1 = time.perf_counter()
    pixels, geo = letterbox(photo, spec)
    tensor = normalize(pixels, spec)
    t2 = time.perf_counter()
    return Prepared(tensor, pixels, geo, photo), {"decode": t1 - t0, "preprocess": t2 - t1}
