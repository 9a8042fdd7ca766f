"""Where a photo uses a real photograph, and the pixels it takes from it.

``factors["photo_use"]`` says how (drawn from a generator of its own, so the other factors of a seed stay as they
were without real photos):

- ``surface``: the photo is the table the subject lies on, in perspective (surfaces under devices);
- ``backdrop``: the photo fills the frame behind the subject (a device or box in front of a real scene);
- ``screen``: the device's screen shows the photo (``screen_content`` becomes ``photo``), intact or cracked;
- ``crop``: a ``general_returns`` photo that is nothing but a crop of the real photo (subject ``photo_crop``);
- ``none``: a procedural photo, as without real photos.

``factors["photo"]`` names the photo and ``factors["photo_sha256"]`` is its digest. The ``real`` split always uses a
(held-out) photo; the other splits use one for :data:`USES` shares of their photos.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from model.synth.factors import CRACK_TONES, DAMAGE, pick
from model.synth.real_photos import REAL_SPLIT, RealPhoto

# Shares of each use per label: for the generated splits (train, val, test, shifted) and for ``real``.
USES = {
    DAMAGE: {"none": 0.5, "surface": 0.2, "backdrop": 0.15, "screen": 0.15},
    "general_returns": {"none": 0.4, "surface": 0.1, "backdrop": 0.1, "screen": 0.1, "crop": 0.3},
}
REAL_USES = {
    DAMAGE: {"surface": 0.35, "backdrop": 0.3, "screen": 0.35},
    "general_returns": {"surface": 0.2, "backdrop": 0.2, "screen": 0.2, "crop": 0.4},
}
CROP_SCALE = (0.2, 1.0)  # crop side as a share of the photo's short side
CROP_ASPECT = (0.75, 4 / 3)
CROP_JPEG_QUALITY = (70, 95)
DEVICE_KEYS = ("device_kind", "body_palette", "screen_content", "glare")
# Factors whose drawing a use replaces (a held-out value there would no longer show).
REPLACES = {
    "none": (),
    "surface": ("surface", "surface_tone"),
    "backdrop": ("surface", "surface_tone"),
    "screen": ("screen_content",),
    "crop": ("surface", "surface_tone", "device_kind", "body_palette", "screen_content", "subject"),
}


def draw_photo_factors(
    rng: np.random.Generator, factors: dict[str, Any], photos: tuple[RealPhoto, ...], split: str
) -> RealPhoto | None:
    """Add ``photo_use``, ``photo`` and ``photo_sha256`` to ``factors`` (and adjust what the use implies); returns
    the photo used, or None for ``photo_use == "none"``."""
    label = factors["label"]
    use = pick(rng, (REAL_USES if split == REAL_SPLIT else USES)[label])
    photo = photos[int(rng.integers(len(photos)))]
    if use == "screen" and factors["subject"] != "device":
        use = "backdrop"  # only a device has a screen
    held = [name for name in factors["held_out"].split(",") if name]
    kept = [name for name in held if name not in REPLACES[use]]
    if held and not kept:
        use = "none"  # a shifted photo keeps at least one held-out factor
    factors["photo_use"] = use
    if use == "none":
        return None
    factors["held_out"] = ",".join(kept)
    factors["photo"] = photo.name
    factors["photo_sha256"] = photo.sha256
    if use == "screen":
        factors["screen_state"] = "on"
        factors["screen_content"] = "photo"
        if label == DAMAGE:
            factors["crack_tone"] = pick(rng, CRACK_TONES["mid"])
    elif use == "crop":
        for key in (*DEVICE_KEYS, "surface", "surface_tone", "wall"):
            factors.pop(key, None)
        factors |= {"subject": "photo_crop", "screen_state": "none", "occluder": "none", "props": ""}
        factors["jpeg_quality"] = int(rng.integers(CROP_JPEG_QUALITY[0], CROP_JPEG_QUALITY[1] + 1))
        aspect = float(np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1]))))
        long_side = max(factors["width"], factors["height"])
        short_side = round(long_side / max(aspect, 1 / aspect))
        factors["width"], factors["height"] = (long_side, short_side) if aspect >= 1 else (short_side, long_side)
    else:
        factors.pop("surface_tone", None)
        factors["surface"] = "real_photo"
        if use == "backdrop":
            factors["wall"] = "real_photo"
    return photo


def cover_crop(
    rng: np.random.Generator, photo: Image.Image, size: tuple[int, int], scale: tuple[float, float] = (0.6, 1.0)
) -> Image.Image:
    """A random crop of ``photo`` with the aspect of ``size`` (``scale`` of the largest such crop), maybe mirrored,
    resized to ``size``."""
    w, h = max(size[0], 1), max(size[1], 1)
    fit = min(photo.width / w, photo.height / h)
    k = fit * rng.uniform(*scale)
    cw, ch = max(int(w * k), 1), max(int(h * k), 1)
    x = int(rng.integers(0, photo.width - cw + 1))
    y = int(rng.integers(0, photo.height - ch + 1))
    out = photo.resize((w, h), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def crop_photo(rng: np.random.Generator, photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A ``general_returns`` photo cut from a real one: a crop whose side is 20-100% of the photo's short side, with
    the aspect of ``size``, maybe mirrored, with mild brightness, contrast and colour jitter."""
    short = min(photo.size)
    side = short * rng.uniform(*CROP_SCALE)
    aspect = size[0] / size[1]
    cw = min(max(int(side * np.sqrt(aspect)), 1), photo.width)
    ch = min(max(int(side / np.sqrt(aspect)), 1), photo.height)
    x = int(rng.integers(0, photo.width - cw + 1))
    y = int(rng.integers(0, photo.height - ch + 1))
    out = photo.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        out = enhance(out).enhance(float(rng.uniform(0.85, 1.15)))
    return out
