"""Things in front of the subject: a finger or thumb entering from the frame edge, and stickers on the glass.

Each occluder draws itself and returns an 'L' mask of the full image, so crack pixels it hides can be
removed from the crack mask.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model.synth.devices import scaled
from model.synth.geometry import apply_h, content_scale, ellipse, rounded_rect, warp_onto
from model.synth.paper import barcode
from model.synth.screens import text_rows

SKIN = {
    "porcelain": (238, 206, 186), "light": (226, 184, 152), "medium": (200, 150, 112),
    "tan": (172, 120, 84), "brown": (128, 84, 58), "dark": (84, 56, 40),
}  # fmt: skip
STICKER_COLOURS = ((250, 250, 246), (250, 220, 60), (240, 90, 60), (70, 170, 230), (120, 200, 120))


def _capsule(a: np.ndarray, b: np.ndarray, r: float, n: int = 10) -> np.ndarray:
    d = (b - a) / max(np.hypot(*(b - a)), 1e-6)
    ang = np.arctan2(d[1], d[0])
    t1 = np.linspace(ang - np.pi / 2, ang + np.pi / 2, n)
    t0 = t1 + np.pi
    tip = b + r * np.stack([np.cos(t1), np.sin(t1)], 1)
    base = a + r * np.stack([np.cos(t0), np.sin(t0)], 1)
    return np.concatenate([tip, base])


def draw_finger(image: Image.Image, rng: np.random.Generator, target: np.ndarray, skin: str) -> Image.Image:
    """A hand reaching in from the nearest frame edge, its finger tip resting near ``target`` (pixels).

    Returns the occluder mask.
    """
    w, h = image.size
    long_side = max(w, h)
    dists = [target[0], w - target[0], target[1], h - target[1]]
    edge = int(np.argmin(np.asarray(dists) + rng.uniform(0, 0.3 * long_side, 4)))
    along = rng.uniform(-0.25, 0.25) * long_side
    outside = np.array(
        [
            [-0.15 * w, target[1] + along],
            [1.15 * w, target[1] + along],
            [target[0] + along, -0.15 * h],
            [target[0] + along, 1.15 * h],
        ][edge]
    )
    radius = long_side * rng.uniform(0.04, 0.065)
    d = (target - outside) / max(np.hypot(*(target - outside)), 1e-6)
    n = np.array([-d[1], d[0]])
    knuckle = target - d * radius * rng.uniform(5.0, 8.0)
    colour = np.array(SKIN[skin], float) * rng.uniform(0.9, 1.08, 3)
    hand = _capsule(
        outside, knuckle - d * radius * 1.5 + n * radius * rng.uniform(-1, 1), radius * rng.uniform(2.3, 3.0)
    )
    finger = _capsule(knuckle, target, radius)
    mask = Image.new("L", image.size, 0)
    mask_draw = ImageDraw.Draw(mask)
    draw = ImageDraw.Draw(image)
    for poly, shade in ((hand, 0.8), (finger, 0.72)):
        xy = [tuple(p) for p in poly.tolist()]
        mask_draw.polygon(xy, fill=255)
        draw.polygon(xy, fill=scaled(colour, shade))
    inner = _capsule(knuckle - n * radius * 0.12, target - n * radius * 0.12 - d * radius * 0.1, radius * 0.78)
    draw.polygon([tuple(p) for p in inner.tolist()], fill=scaled(colour, 1.0))
    hi = _capsule(knuckle - n * radius * 0.35, target - n * radius * 0.35 - d * radius * 0.4, radius * 0.3)
    draw.polygon([tuple(p) for p in hi.tolist()], fill=scaled(colour, 1.08, 10))
    nail = ellipse(0, 0, radius * 0.62, radius * 0.5, 16)
    rot = np.array([[d[0], -d[1]], [d[1], d[0]]])
    draw.polygon(
        [tuple(p) for p in (nail @ rot.T + target - d * radius * 0.55).tolist()], fill=scaled(colour, 1.05, 30)
    )
    for k in (1.8, 3.2):
        c = target - d * radius * k
        crease = [tuple(c + n * radius * 0.5), tuple(c - n * radius * 0.4)]
        draw.line(crease, fill=scaled(colour, 0.8), width=max(1, int(radius / 14)))
    return mask


def draw_sticker(
    image: Image.Image, rng: np.random.Generator, h_screen: np.ndarray, screen_size: tuple[float, float]
) -> Image.Image:
    """A sticker (price tag, protective-film tab, warning label) stuck on the screen plane; returns its mask."""
    sw, sh = screen_size
    w = min(sw, sh) * rng.uniform(0.2, 0.45)
    hgt = w * rng.uniform(0.4, 0.9)
    x, y = rng.uniform(0, sw - w), rng.uniform(0, sh - hgt)
    colour = STICKER_COLOURS[int(rng.integers(len(STICKER_COLOURS)))]
    ppm = content_scale(h_screen, screen_size, image.size)
    px = (max(int(w * ppm), 8), max(int(hgt * ppm), 8))
    content = Image.new("RGB", px, colour)
    d = ImageDraw.Draw(content)
    ink = (20, 20, 20) if sum(colour) > 400 else (250, 250, 250)
    text_rows(d, rng, (px[0] * 0.08, px[1] * 0.12, px[0] * 0.92, px[1] * 0.55), px[1] * 0.12, ink)
    if rng.random() < 0.5:
        barcode(d, rng, (px[0] * 0.1, px[1] * 0.62, px[0] * 0.9, px[1] * 0.9))
    origin = np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])
    hom = h_screen @ origin
    outline = rounded_rect(w, hgt, min(w, hgt) * 0.12)
    warp_onto(image, content, hom, (w, hgt), outline)
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in apply_h(hom, outline).tolist()], fill=255)
    return mask
