"""The shared preprocessing: letterbox geometry, EXIF orientation, mode conversion, normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from model.config import Preprocessing
from model.preprocess import (
    Photo,
    decode_photo,
    draft_size,
    letterbox,
    letterbox_geometry,
    normalize,
    prepare,
    to_rgb,
)

SPEC = Preprocessing()

# PIL transpose that turns an upright image into what a sensor stores for each EXIF orientation.
# exif_transpose applies the inverse of each of these.
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _asymmetric(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    arr[: height // 3, : width // 4] = (255, 0, 0)  # a marker in the top-left corner
    return Image.fromarray(arr)


def _stored(upright: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    op = _STORE[orientation]
    raw = upright if op is None else upright.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    raw.save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from([64, 255, 256, 320]))
def test_letterbox_geometry_maps_photo_corners_to_the_pasted_region(width: int, height: int, size: int) -> None:
    geo = letterbox_geometry(width, height, size)
    assert max(geo.new_width, geo.new_height) == size
    assert 0 <= geo.pad_x <= size - geo.new_width and 0 <= geo.pad_y <= size - geo.new_height
    assert geo.input_to_photo(geo.pad_x, geo.pad_y) == pytest.approx((0, 0))
    assert geo.input_to_photo(geo.pad_x + geo.new_width, geo.pad_y + geo.new_height) == pytest.approx((width, height))


def test_letterbox_geometry_rejects_empty_photos() -> None:
    with pytest.raises(ValueError, match="0x10"):
        letterbox_geometry(0, 10, 256)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_every_exif_orientation(orientation: int) -> None:
    upright = _asymmetric(37, 23)
    photo = decode_photo(_stored(upright, orientation))
    assert (photo.width, photo.height) == (37, 23)
    assert photo.orientation == orientation
    np.testing.assert_array_equal(np.asarray(photo.image), np.asarray(upright))


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_draft_decode_keeps_full_upright_size_and_covers_the_input(orientation: int) -> None:
    upright = _asymmetric(2016, 1512)
    data = _stored(upright, orientation, fmt="JPEG")
    photo = decode_photo(data, draft_to=256)
    assert (photo.width, photo.height) == (2016, 1512)
    assert photo.image.size[0] < 2016 and min(photo.image.size) >= 256  # decoded at a DCT reduction
    assert photo.image.size[0] > photo.image.size[1]  # still upright after the rotation tag


@pytest.mark.parametrize(
    ("size", "orientation", "square", "letterbox"),
    [
        ((640, 480), 1, (640, 480), (320, 240)),  # the square rule cannot halve 480 below 256
        ((1024, 768), 6, (512, 384), (256, 192)),  # stored rotated (768x1024)
        ((448, 336), 1, (448, 336), (448, 336)),  # halving would fall below the letterbox (256x192)
        ((4032, 3024), 1, (504, 378), (504, 378)),  # 1/8 is as far as JPEG goes
    ],
)
def test_the_letterbox_draft_decodes_coarser_yet_covers_the_letterbox(
    size: tuple[int, int], orientation: int, square: tuple[int, int], letterbox: tuple[int, int]
) -> None:
    """Sizes are upright; the letterbox of each photo is 256 on its long side."""
    data = _stored(_asymmetric(*size), orientation, fmt="JPEG")
    for rule, expected in (("square", square), ("letterbox", letterbox)):
        photo = decode_photo(data, draft_to=256, draft=rule)
        assert photo.image.size == expected and (photo.width, photo.height) == size, rule
        geo = letterbox_geometry(photo.width, photo.height, 256)
        assert min(np.subtract(photo.image.size, (geo.new_width, geo.new_height))) >= 0  # the resize only shrinks


def test_an_unknown_draft_rule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'halfway'"):
        draft_size(640, 480, 256, "halfway")


def test_fast_and_full_decode_give_nearly_the_same_tensor() -> None:
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), np.ones((40, 40, 1), dtype=np.uint8))
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, "JPEG", quality=95)
    fast = prepare(buf.getvalue(), SPEC, fast=True).tensor
    full = prepare(buf.getvalue(), SPEC, fast=False).tensor
    assert fast.shape == full.shape == (3, 256, 256)
    assert float(np.abs(fast - full).mean()) < 0.05  # normalised units; one grey level is ~0.017


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: Image.new("L", (4, 4), 200), (200, 200, 200)),
        (lambda: Image.new("1", (4, 4), 1), (255, 255, 255)),
        (lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 0)), (255, 255, 255)),  # transparent -> white
        (lambda: Image.new("RGBA", (4, 4), (10, 20, 30, 255)), (10, 20, 30)),
        (lambda: Image.new("LA", (4, 4), (50, 255)), (50, 50, 50)),
        (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)), (128, 128, 128)),
    ],
)
def test_to_rgb_converts_modes(make, expected: tuple[int, int, int]) -> None:
    out = to_rgb(make())
    assert out.mode == "RGB"
    assert tuple(np.asarray(out)[0, 0]) == expected


def test_palette_with_transparency_composites_on_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    assert np.asarray(to_rgb(img)).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_normalize_matches_the_formula_and_layout() -> None:
    pixels = np.zeros((2, 5, 7, 3), dtype=np.uint8)
    pixels[1, 2, 3] = (255, 0, 51)
    out = normalize(pixels, SPEC)
    assert out.shape == (2, 3, 5, 7) and out.dtype == np.float32
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(out[1, :, 2, 3], expected, rtol=1e-6)


@pytest.mark.parametrize("shape", [(16, 17, 3), (2, 12, 11, 3), (2, 2, 8, 9, 3)])
def test_normalize_is_the_float32_formula_bit_for_bit(shape: tuple[int, ...]) -> None:
    """Every byte value in every channel, any leading batch axes, a mean and std other than the default."""
    spec = Preprocessing(mean=(0.5, 0.25, 0.125), std=(0.3, 0.7, 0.9))
    pixels = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    pixels.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]
    mean, std = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    formula = np.moveaxis((pixels.astype(np.float32) / np.float32(255.0) - mean) / std, -1, -3)
    out = normalize(pixels, spec)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, formula)


def test_normalize_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"\(3, 5, 5\)"):
        normalize(np.zeros((3, 5, 5), dtype=np.uint8), SPEC)


@given(st.integers(1, 90), st.integers(1, 90), st.integers(0, 2**32 - 1))
def test_letterbox_writes_every_pixel_the_photo_or_the_mean_colour(width: int, height: int, seed: int) -> None:
    """The canvas starts uninitialised and only the padding is filled: compare with fill-everything-then-paste."""
    spec = Preprocessing(size=48)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    photo = Photo(Image.fromarray(rgb), width, height)
    pixels, geo = letterbox(photo, spec)
    expected = np.empty_like(pixels)
    expected[...] = [round(m * 255) for m in spec.mean]
    resized = photo.image.resize((geo.new_width, geo.new_height), Image.Resampling.BILINEAR)
    expected[geo.pad_y : geo.pad_y + geo.new_height, geo.pad_x : geo.pad_x + geo.new_width] = np.asarray(resized)
    np.testing.assert_array_equal(pixels, expected)


def test_letterbox_pads_with_the_mean_colour_which_normalises_to_about_zero() -> None:
    photo = decode_photo(_stored(_asymmetric(300, 100), 1))
    pixels, geo = letterbox(photo, SPEC)
    assert (geo.new_width, geo.new_height, geo.pad_y) == (256, 85, 85)
    tensor = normalize(pixels, SPEC)
    assert float(np.abs(tensor[:, 0, :]).max()) < 0.01  # top padding row
    assert float(np.abs(tensor[:, geo.pad_y + 40, :]).max()) > 0.5  # photo content


def _exif_with_orientation(kind: int, payload: bytes) -> bytes:
    """Raw EXIF (little-endian TIFF) whose only tag is Orientation with the given TIFF type and value bytes."""
    import struct

    count = len(payload) if kind == 2 else 1
    inline = len(payload) <= 4
    value = payload.ljust(4, b"\0") if inline else struct.pack("<I", 8 + 2 + 12 + 4)
    ifd = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, kind, count) + value + struct.pack("<I", 0)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + (b"" if inline else payload)


@pytest.mark.parametrize(
    "kind, payload",
    [(2, b"abc\0"), (5, bytes(8)), (7, b"\x06"), (3, (9).to_bytes(2, "little"))],
    ids=["text", "rational-0/0", "undefined-bytes", "out-of-range"],
)
def test_a_malformed_orientation_tag_leaves_the_photo_as_stored(kind: int, payload: bytes) -> None:
    """An unusable EXIF orientation (text, NaN, raw bytes, 9) is read as 1: the pixels are decoded as stored instead
    of the photo being refused."""
    pixels = np.random.default_rng(5).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    plain, tagged = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(plain, "PNG")
    Image.fromarray(pixels).save(tagged, "PNG", exif=_exif_with_orientation(kind, payload))
    assert Image.open(io.BytesIO(tagged.getvalue())).getexif().get(0x0112) is not None
    photo = decode_photo(tagged.getvalue())
    assert photo.orientation == 1
    np.testing.assert_array_equal(np.asarray(photo.image), np.asarray(decode_photo(plain.getvalue()).image))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
@pytest.mark.parametrize("block", [b"MM\x00\xa7\x00\x00\x00\x08" + bytes(16), b"abcd"], ids=["bad-magic", "cut-short"])
def test_an_unreadable_exif_block_leaves_the_photo_as_stored(fmt: str, block: bytes) -> None:
    """Pillow raises SyntaxError ("not a TIFF file") or struct.error for an EXIF block it cannot parse; the pixels
    are fine, so the photo is decoded as stored (it was a 422 for PNG, WebP and HEIC)."""
    pixels = np.random.default_rng(6).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    tagged = io.BytesIO()
    Image.fromarray(pixels).save(tagged, fmt, exif=b"Exif\0\0" + block, **({"lossless": True} if fmt == "WEBP" else {}))
    photo = decode_photo(tagged.getvalue())
    assert photo.orientation == 1 and photo.image.size == (32, 24)
