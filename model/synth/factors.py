"""The factor space: everything a photo is drawn from, as data, plus the values held out for ``shifted``.

``train``, ``val`` and ``test`` draw categorical factors only from the in-distribution tables below. The
``shifted`` split additionally draws from :data:`HELD_OUT` (each applicable factor with probability
``SHIFT_PROBABILITY``, and at least one per photo), so it measures robustness to unseen colours, an unseen
table texture, an unseen device, an unseen screen content, an unseen fracture pattern and an unseen
packaging item. ``factors["held_out"]`` lists the factor names that took a held-out value.

All factor values are plain ``str``/``int``/``float``/``bool`` so a factor dict can go straight into JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.config import CLASSES
from model.synth.real_photos import REAL_SPLIT, PhotoSet

SPLITS: tuple[str, ...] = ("train", "val", "test", "shifted")
# Scenes built on real photos held out of training (``model.synth.real_photos``): drawn like ``test`` otherwise.
PHOTO_SPLITS: tuple[str, ...] = (*SPLITS, REAL_SPLIT)
DAMAGE, RETURNS = CLASSES

ASPECTS: dict[str, tuple[tuple[int, int], float]] = {
    "4:3": ((4, 3), 0.28),
    "3:4": ((3, 4), 0.30),
    "16:9": ((16, 9), 0.10),
    "9:16": ((9, 16), 0.16),
    "1:1": ((1, 1), 0.16),
}
DEFAULT_LONG_SIDE = (448, 640)

# In-distribution categorical factors: value -> weight.
DEVICE_KINDS = {"phone": 0.42, "tablet": 0.22, "laptop": 0.20, "monitor": 0.16}
BODY_PALETTES = {"black": 0.25, "graphite": 0.17, "silver": 0.17, "white": 0.13, "gold": 0.1, "navy": 0.1, "rose": 0.08}
SCREEN_CONTENTS = {"ui_light": 0.24, "ui_dark": 0.18, "wallpaper": 0.2, "photo": 0.14, "text": 0.12, "video": 0.12}
CRACK_STYLES = {"spiderweb": 0.4, "branching": 0.35, "corner_shatter": 0.25}
CRACK_WIDTHS = {"hairline": 0.25, "thin": 0.45, "thick": 0.30}
CRACK_EXTENTS = {"small": 0.12, "medium": 0.5, "large": 0.38}
# Crack tone by how bright the screen is: glints show on dark glass, dark fracture lines on bright content.
CRACK_TONES = {
    "bright": {"light": 0.15, "dark": 0.5, "mixed": 0.35},
    "mid": {"light": 0.4, "dark": 0.3, "mixed": 0.3},
    "dark": {"light": 0.65, "dark": 0.05, "mixed": 0.3},
}
BRIGHT_CONTENTS = ("ui_light", "text", "map")
DARK_CONTENTS = ("off", "ui_dark", "video")
SURFACES = {
    "laminate": 0.11, "wood": 0.15, "marble": 0.16, "gravel": 0.07, "brick": 0.07,
    "tiles": 0.1, "carpet": 0.1, "fabric": 0.12, "concrete": 0.12,
}  # fmt: skip
SURFACE_TONES = {"light": 0.25, "mid": 0.25, "dark": 0.2, "warm": 0.15, "cool": 0.15}
WALLS = {"paint": 0.6, "brick": 0.2, "tiles": 0.2}
COLOR_CASTS = {"neutral": 0.4, "warm": 0.25, "cool": 0.2, "daylight": 0.15}
RETURN_SUBJECTS = {"device": 0.6, "box": 0.11, "document": 0.08, "cable": 0.06, "packaging": 0.06, "surface": 0.09}
OCCLUDERS = {"none": 0.55, "finger": 0.2, "sticker": 0.1, "crop": 0.15}
BLURS = {"none": 0.62, "defocus": 0.22, "motion": 0.16}
PROPS = {"cable": 0.3, "label": 0.2, "box": 0.15, "bubble_wrap": 0.15, "phone": 0.2}
SKIN_TONES = ("porcelain", "light", "medium", "tan", "brown", "dark")
EXIF_ORIENTATIONS = {1: 0.8, 6: 0.08, 8: 0.05, 3: 0.04, 2: 0.0075, 4: 0.0075, 5: 0.0075, 7: 0.0075}

# Values only the "shifted" split may draw, per factor name.
HELD_OUT: dict[str, tuple[str, ...]] = {
    "device_kind": ("handheld_console",),  # a wide game handheld: new body shape, buttons around the screen
    "body_palette": ("mint", "coral", "lilac"),  # saturated device colours
    "surface": ("terrazzo",),  # a speckled stone-chip table texture family
    "surface_tone": ("teal", "crimson"),  # strongly saturated table colours
    "screen_content": ("map",),  # a maps app: curvy roads and a river on a light background
    "crack_style": ("double_impact",),  # two small impact webs joined by a crack
    "color_cast": ("green_fluorescent", "magenta"),  # tints outside the warm/cool white-balance range
    "subject": ("padded_envelope",),  # a bubble mailer with a shipping label (general_returns only)
}
SHIFT_PROBABILITY = 0.25


def pick(rng: np.random.Generator, table: dict[Any, float]) -> Any:
    """One key of ``table``, drawn with probability proportional to its weight."""
    keys = list(table)
    cumulative = np.cumsum(list(table.values()))
    return keys[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(keys) - 1)]


def _applicable(factors: dict[str, Any]) -> list[str]:
    names = ["surface", "surface_tone", "color_cast"]
    if factors["label"] == RETURNS:
        names.append("subject")
    if factors["subject"] == "device":
        names += ["device_kind", "body_palette"]
        if factors["screen_state"] == "on":
            names.append("screen_content")
    if factors["label"] == DAMAGE:
        names.append("crack_style")
    return names


def _device_factors(rng: np.random.Generator, label: str) -> dict[str, Any]:
    kind = pick(rng, DEVICE_KINDS)
    on = rng.random() < 0.6
    out: dict[str, Any] = {
        "device_kind": kind,
        "body_palette": pick(rng, BODY_PALETTES),
        "screen_state": "on" if on else "off",
        "screen_content": pick(rng, SCREEN_CONTENTS) if on else "off",
        "glare": float(rng.uniform(0.0, 1.0) if rng.random() < 0.6 else 0.0),
    }
    if label == DAMAGE:
        content = out["screen_content"]
        tone_table = CRACK_TONES[
            "bright" if content in BRIGHT_CONTENTS else "dark" if content in DARK_CONTENTS else "mid"
        ]
        out |= {
            "crack_style": pick(rng, CRACK_STYLES),
            "crack_extent": pick(rng, CRACK_EXTENTS),
            "crack_tone": pick(rng, tone_table),
            "crack_width": pick(rng, CRACK_WIDTHS),
            "lcd_bleed": bool(on and rng.random() < 0.15),
        }
        if out["crack_extent"] == "small" and out["crack_width"] == "hairline":
            out["crack_width"] = "thin"  # a small fracture drawn in hairlines would be invisible at 256 px
    return out


def draw_factors(rng: np.random.Generator, label: str, split: str) -> dict[str, Any]:
    """Draw the factor dict of one photo from ``rng`` (see the module docstring for the split rules)."""
    aspect = pick(rng, {k: w for k, (_, w) in ASPECTS.items()})
    ratio = ASPECTS[aspect][0]
    long_side = int(rng.integers(DEFAULT_LONG_SIDE[0], DEFAULT_LONG_SIDE[1] + 1))
    short_side = round(long_side * min(ratio) / max(ratio))
    width, height = (long_side, short_side) if ratio[0] >= ratio[1] else (short_side, long_side)
    subject = "device" if label == DAMAGE else pick(rng, RETURN_SUBJECTS)
    n_props = int(rng.choice(3, p=[0.55, 0.33, 0.12]))
    factors: dict[str, Any] = {
        "label": label,
        "split": split,
        "aspect": aspect,
        "width": width,
        "height": height,
        "subject": subject,
        "surface": pick(rng, SURFACES),
        "surface_tone": pick(rng, SURFACE_TONES),
        "wall": pick(rng, WALLS),
        "props": ",".join(sorted(pick(rng, PROPS) for _ in range(n_props))),
        "occluder": pick(rng, OCCLUDERS) if subject == "device" else ("finger" if rng.random() < 0.1 else "none"),
        "skin_tone": SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        "color_cast": pick(rng, COLOR_CASTS),
        "exposure_ev": float(rng.normal(0.0, 0.3)),
        "contrast": float(rng.uniform(0.85, 1.2)),
        "vignette": float(rng.uniform(0.0, 0.45)),
        "light_gradient": float(rng.uniform(0.0, 0.5)),
        "blur": pick(rng, BLURS),
        "blur_amount": float(rng.uniform(0.4, 1.0)),
        "noise_sigma": float(rng.uniform(0.5, 5.0)),
        "exif_orientation": int(pick(rng, EXIF_ORIENTATIONS)),
        "jpeg_quality": int(rng.integers(60, 96)),
        "screen_state": "none",
    }
    if subject == "device":
        factors |= _device_factors(rng, label)
    if split == "shifted":
        _shift(rng, factors)
    factors["held_out"] = ",".join(k for k in HELD_OUT if factors.get(k) in HELD_OUT[k])
    return factors


def _shift(rng: np.random.Generator, factors: dict[str, Any]) -> None:
    names = _applicable(factors)
    chosen = [n for n in names if rng.random() < SHIFT_PROBABILITY]
    if not chosen:
        chosen = [names[int(rng.integers(len(names)))]]
    if "subject" in chosen:
        factors["subject"] = "padded_envelope"
        factors["occluder"] = "none"
        for key in ("device_kind", "body_palette", "screen_content"):
            if key in chosen:
                chosen.remove(key)
    for name in chosen:
        values = HELD_OUT[name]
        factors[name] = values[int(rng.integers(len(values)))]
    if factors.get("screen_content") in BRIGHT_CONTENTS and factors.get("crack_tone") == "light":
        factors["crack_tone"] = "mixed"
    if factors.get("subject") != "device":
        for key in ("device_kind", "body_palette", "screen_content", "glare"):
            factors.pop(key, None)
        factors["screen_state"] = "none"


def sample_factors(seed: int, label: str, split: str = "train", photos: PhotoSet | None = None) -> dict[str, Any]:
    """The factor dict :func:`model.synth.render_photo` uses for these arguments, without rendering."""
    from model.synth.real_scenes import draw_photo_factors

    factors = draw_factors(factor_rng(seed, label, split), label, split)
    if photos is not None:
        draw_photo_factors(photo_rng(seed, label, split), factors, photos.for_split(split), split)
    return factors


def factor_rng(seed: int, label: str, split: str) -> np.random.Generator:
    """The generator that draws a photo's factors (independent of the one that draws its pixels)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), PHOTO_SPLITS.index(split), CLASSES.index(label), 0])
    )


def render_rng(seed: int, label: str, split: str, attempt: int) -> np.random.Generator:
    """The generator for a photo's pixels; ``attempt`` changes on a re-roll of an unusable layout."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), PHOTO_SPLITS.index(split), CLASSES.index(label), 1, attempt])
    )


def photo_rng(seed: int, label: str, split: str) -> np.random.Generator:
    """The generator that draws whether and how a photo uses a real photograph (``model.synth.real_scenes``)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), PHOTO_SPLITS.index(split), CLASSES.index(label), 2])
    )
