"""Photos of every kind the service must accept or reject, made with Pillow and pillow-heif."""

from __future__ import annotations

import io
import itertools
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from tests.service.serve_process import Served, serving

pillow_heif.register_heif_opener()


def scene(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth colour gradient with some noise: content that survives JPEG and is not uniform."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    rgb += rng.normal(0, 12, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A JPEG stored 320x240 with EXIF orientation 6 (rotate 90° clockwise to view): upright it is 240x320."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(scene(), "JPEG", exif=exif.tobytes(), quality=90)


def png16() -> bytes:
    ramp = (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def animated(fmt: str) -> bytes:
    frames = [scene(seed=i) for i in range(3)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


PHOTO_MAKERS: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: encode(scene(), "JPEG", quality=90),
    "png": lambda: encode(scene(), "PNG"),
    "webp": lambda: encode(scene(), "WEBP", quality=90),
    "heic": lambda: encode(scene(), "HEIF", quality=90),
    "cmyk_jpeg": lambda: encode(scene().convert("CMYK"), "JPEG", quality=90),
    "gray_jpeg": lambda: encode(scene().convert("L"), "JPEG", quality=90),
    "png16": png16,
    "rgba_png": lambda: encode(scene().convert("RGBA"), "PNG"),
    "la_png": lambda: encode(scene().convert("LA"), "PNG"),
    "palette_png": lambda: encode(scene().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "exif_rotated_jpeg": exif_rotated_jpeg,
    "animated_webp": lambda: animated("WEBP"),
    "animated_png": lambda: animated("PNG"),
}


class PhotoKit:
    """The helpers above, for tests (which reach them through the ``kit`` fixture)."""

    scene = staticmethod(scene)
    encode = staticmethod(encode)
    png_header_only = staticmethod(png_header_only)


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Every accepted kind of photo, by name."""
    return {name: make() for name, make in PHOTO_MAKERS.items()}


@pytest.fixture(scope="session")
def kit() -> type[PhotoKit]:
    return PhotoKit


@pytest.fixture(scope="session")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Multiprocess metrics for in-process servers; set once per test session (before any metric is created)."""
    from service.metrics import use_metrics_dir

    directory, _ = use_metrics_dir(tmp_path_factory.mktemp("metrics"))
    return directory


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited (a short-lived child's)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(model, **env)`` starts a healthy ``triage serve`` (``TRIAGE_*`` overrides in ``env``); when the test
    ends, whatever happened, each one's whole process group is stopped (``serve_process.serving``)."""
    numbers = itertools.count()
    with ExitStack() as started:

        def start(model: Path, **extra: str) -> Served:
            return started.enter_context(serving(model, tmp_path / f"serve-{next(numbers)}.log", **extra))

        yield start
