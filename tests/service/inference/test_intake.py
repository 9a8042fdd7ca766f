"""Photo intake: type sniffing, limits checked before decoding, colour modes, orientation, and equality with the
tensor training evaluates for the same file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.config import CLASSES, Preprocessing
from model.data import image_folder
from model.preprocess import normalize
from service.inference.intake import IntakeError, IntakeLimits, read_photo, sniff_type

SPEC = Preprocessing()
LIMITS = IntakeLimits()


def intake_error(data: bytes, limits: IntakeLimits = LIMITS) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        read_photo(data, SPEC, limits)
    return caught.value


@pytest.mark.parametrize(
    ("name", "kind"),
    [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WebP"), ("heic", "HEIC/HEIF"), ("animated_png", "PNG")],
)
def test_type_is_sniffed_from_magic_bytes(photos: dict[str, bytes], name: str, kind: str) -> None:
    assert sniff_type(photos[name]) == kind


@pytest.mark.parametrize(
    "data",
    [
        b"hello, this is text",
        b"GIF89a" + b"\0" * 32,
        b"BM" + b"\0" * 64,
        b"%PDF-1.7\n",
        b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf",
    ],
    ids=["text", "gif", "bmp", "pdf", "avif"],
)
def test_unsupported_types_are_415(data: bytes) -> None:
    error = intake_error(data)
    assert (error.status, error.reason) == (415, "unsupported_type")
    assert "JPEG" in error.message


def test_gif_is_refused_even_though_pillow_reads_it(kit) -> None:
    assert intake_error(kit.encode(kit.scene(), "GIF")).status == 415


@pytest.mark.parametrize(
    "name",
    [
        "jpeg",
        "png",
        "webp",
        "heic",
        "cmyk_jpeg",
        "gray_jpeg",
        "png16",
        "rgba_png",
        "la_png",
        "palette_png",
        "animated_webp",
        "animated_png",
    ],
)
def test_every_supported_kind_becomes_an_rgb_network_input(photos: dict[str, bytes], name: str) -> None:
    prepared, timings = read_photo(photos[name], SPEC, LIMITS)
    assert prepared.tensor.shape == (3, SPEC.size, SPEC.size) and prepared.tensor.dtype == np.float32
    assert prepared.photo.image.mode == "RGB"
    assert np.isfinite(prepared.tensor).all()
    assert set(timings) == {"decode", "preprocess"}


def test_sixteen_bit_grey_keeps_its_range(photos: dict[str, bytes]) -> None:
    prepared, _ = read_photo(photos["png16"], SPEC, LIMITS)
    pixels = np.asarray(prepared.photo.image)
    assert pixels.min() == 0 and pixels.max() == 255


def test_alpha_is_composited_on_white(kit) -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    prepared, _ = read_photo(kit.encode(clear, "PNG"), SPEC, LIMITS)
    assert (np.asarray(prepared.photo.image) == 255).all()


def test_exif_orientation_is_applied(photos: dict[str, bytes]) -> None:
    prepared, _ = read_photo(photos["exif_rotated_jpeg"], SPEC, LIMITS)
    assert (prepared.photo.width, prepared.photo.height) == (240, 320)
    assert prepared.geometry.new_height == SPEC.size and prepared.geometry.new_width < SPEC.size


def test_animation_uses_its_first_frame(photos: dict[str, bytes], kit) -> None:
    first, _ = read_photo(photos["animated_png"], SPEC, LIMITS)
    alone, _ = read_photo(kit.encode(kit.scene(seed=0), "PNG"), SPEC, LIMITS)
    np.testing.assert_array_equal(first.pixels, alone.pixels)


def test_byte_limit_is_413(photos: dict[str, bytes]) -> None:
    error = intake_error(photos["png"], IntakeLimits(max_bytes=len(photos["png"]) - 1))
    assert (error.status, error.reason) == (413, "too_large")


# Sides over the service's 50 MP (8,000 px), over Pillow's warning at 89 MP (9,460 px) and over its refusal at
# 179 MP (13,378 px): one wording, the service's, whichever library noticed first.
@pytest.mark.parametrize(
    "side", [8_000, 10_000, 13_378, 13_379, 40_000, 65_535], ids=["ours", "ours", "ours", "pillow", "pillow", "pillow"]
)
def test_pixel_limit_is_checked_from_the_header_before_decoding(kit, side: int) -> None:
    bomb = kit.png_header_only(side, side)
    assert len(bomb) < 200  # 64 bytes of pixel data: decoding it would be a 422 (truncated), so a 413 came first
    error = intake_error(bomb)
    assert (error.status, error.reason) == (413, "too_many_pixels")
    shown = f"{side}x{side}" if side * side <= 2 * Image.MAX_IMAGE_PIXELS else str(side * side)
    assert error.message == f"image is {shown} pixels; the limit is {LIMITS.max_pixels} pixels"


def test_pixels_over_pillows_refusal_are_refused_at_pillows_limit_when_the_service_allows_more(kit) -> None:
    """A configured limit above Pillow's refusal (2 * MAX_IMAGE_PIXELS) cannot be met: the answer names the limit
    that holds."""
    pillows = 2 * Image.MAX_IMAGE_PIXELS
    error = intake_error(kit.png_header_only(20_000, 20_000), IntakeLimits(max_pixels=10 * pillows, max_side=65_535))
    assert error.message == f"image is {20_000 * 20_000} pixels; the limit is {pillows} pixels"


def test_pillows_decompression_bomb_warning_is_not_raised_while_decoding(
    kit, recwarn: pytest.WarningsRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo within the service's limit but over Pillow's warning threshold decodes without Pillow's warning."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = kit.encode(kit.scene(40, 40), "PNG")  # 1600 pixels: over 1000, within Pillow's refusal at 2000
    read_photo(data, SPEC, LIMITS)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pixel_limit_counts_decoded_pixels(photos: dict[str, bytes]) -> None:
    assert intake_error(photos["jpeg"], IntakeLimits(max_pixels=320 * 240 - 1)).status == 413
    read_photo(photos["jpeg"], SPEC, IntakeLimits(max_pixels=320 * 240))


@pytest.mark.parametrize("width, height", [(50_000_000, 1), (1, 50_000_000), (32_769, 2)])
def test_a_side_over_the_limit_is_413_from_the_header(kit, width: int, height: int) -> None:
    """Within the pixel limit, but a hair-thin strip: refused from the header, before Pillow allocates a row
    pointer per row (1.3 GB for 1 x 50,000,000)."""
    error = intake_error(kit.png_header_only(width, height))
    assert (error.status, error.reason) == (413, "too_many_pixels")
    assert error.message == f"image is {width}x{height} pixels; no side may be longer than 32768"


def test_a_side_at_the_limit_is_read(kit) -> None:
    prepared, _ = read_photo(kit.encode(kit.scene(2048, 2).resize((32_768, 2)), "PNG"), SPEC, LIMITS)
    assert prepared.photo.width == 32_768


def test_empty_file_is_422() -> None:
    error = intake_error(b"")
    assert (error.status, error.reason) == (422, "empty")


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "heic"])
def test_truncated_files_are_422(photos: dict[str, bytes], name: str) -> None:
    data = photos[name]
    error = intake_error(data[: len(data) // 2])
    assert (error.status, error.reason) == (422, "undecodable")


def test_right_magic_wrong_body_is_422() -> None:
    assert intake_error(b"\xff\xd8\xff" + b"garbage" * 20).status == 422
    assert intake_error(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20).status == 422


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["jpeg", "png", "webp", "heic"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=12),
)
def test_corrupted_photos_only_ever_raise_intake_errors(
    photos: dict[str, bytes], kind: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(photos[kind])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    data = data[: max(1, int(cut * len(data)))] if cut < 0.9 else data
    try:
        prepared, _ = read_photo(bytes(data), SPEC, LIMITS)
    except IntakeError as exc:
        assert exc.status in (413, 415, 422)
    else:
        assert prepared.tensor.shape == (3, SPEC.size, SPEC.size)


def test_intake_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(IntakeError(413, "too big", "too_large")))
    assert (error.status, error.message, error.reason) == (413, "too big", "too_large")


def test_full_decode_is_available_and_close_to_the_fast_path(kit) -> None:
    data = kit.encode(kit.scene(1600, 1200), "JPEG", quality=92)
    fast, _ = read_photo(data, SPEC, LIMITS)
    full, _ = read_photo(data, SPEC, LIMITS, fast=False)
    assert fast.photo.image.size == (400, 300) and full.photo.image.size == (1600, 1200)
    assert np.abs(fast.pixels.astype(int) - full.pixels.astype(int)).mean() < 4


def test_serving_tensor_equals_training_eval_tensor(photos: dict[str, bytes], kit, tmp_path: Path) -> None:
    """Training reads an ImageFolder through ``model.data`` and normalises with ``model.preprocess.normalize``;
    serving's ``read_photo`` must hand the network exactly the same numbers for the same file."""
    names = sorted(photos)
    big = kit.encode(kit.scene(1600, 1200, seed=3), "JPEG", quality=92)
    files = [(name, photos[name]) for name in names] + [("big_jpeg", big)]
    suffix = {"heic": ".heic", "webp": ".webp"}
    for i, (name, data) in enumerate(files):
        label = CLASSES[i % len(CLASSES)]
        ext = next((s for k, s in suffix.items() if k in name), ".png" if "png" in name else ".jpg")
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / f"{i:02d}_{name}{ext}").write_bytes(data)
    dataset, skipped = image_folder(tmp_path, SPEC)
    assert skipped == []
    training = normalize(dataset.pixels, SPEC)
    order = sorted(tmp_path.glob("*/*"), key=lambda p: (CLASSES.index(p.parent.name), p.name))
    assert len(order) == len(training)
    for path, expected in zip(order, training, strict=True):
        served, _ = read_photo(path.read_bytes(), SPEC, LIMITS)
        np.testing.assert_array_equal(served.tensor, expected, err_msg=path.name)
