"""Drawing screen damage onto the photo: fracture lines, crushed-glass haze and broken-panel artefacts.

Fractures come from :mod:`model.synth.cracks` in screen-plane coordinates and are projected through the
screen homography, drawn at the photo's resolution and clipped to the visible glass. Line widths are a
fraction of the photo's long side, so a 4032 px photo shows the same fracture as a 512 px one; a line
thinner than one pixel is drawn one pixel wide and proportionally fainter.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from model.synth.cracks import CrackPattern
from model.synth.geometry import apply_h

# At the model's 256 px input these are about 0.37, 0.57 and 1.0 px: every fracture stays visible to it.
WIDTH_PER_LONG_SIDE = {"hairline": 1 / 700, "thin": 1 / 450, "thick": 1 / 250}
LEVEL_WIDTH = (1.0, 0.65, 0.4)  # main cracks, branches and rings, crush-zone fragments
LEVEL_STRENGTH = (1.0, 0.85, 0.65)


def _glint_chunks(rng: np.random.Generator, pts: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Split a projected polyline into runs of different strength: real cracks catch the light unevenly."""
    n = len(pts)
    if n < 8:
        return [(pts, float(rng.uniform(0.7, 1.0)))]
    cuts = np.unique(rng.integers(2, n - 2, 3))
    edges = [0, *cuts.tolist(), n - 1]
    strength = rng.uniform(0.6, 1.0, len(edges) - 1).tolist()
    return [(pts[a : b + 1], s) for a, b, s in zip(edges[:-1], edges[1:], strength, strict=True)]


def _pen(width: float) -> tuple[int, float]:
    """Integer pen width for a fractional ``width`` and the opacity factor that keeps its ink constant."""
    pixels = max(1, math.ceil(width - 0.15))
    return pixels, min(1.0, width / pixels)


def draw_cracks(
    image: Image.Image,
    pattern: CrackPattern,
    h_screen: np.ndarray,
    box: tuple[int, int, int, int],
    screen_mask: Image.Image,
    *,
    width: str,
    tone: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw ``pattern`` (through ``h_screen``) inside ``screen_mask`` (an 'L' image covering ``box``).

    ``tone`` is ``light`` (glinting white lines), ``dark`` or ``mixed`` (dark edges, light core). Wide
    lines get a brighter centre line. Returns the boolean crack mask of ``box``.
    """
    size = (box[2] - box[0], box[3] - box[1])
    if not pattern.walks:
        return np.zeros((size[1], size[0]), bool)
    base = WIDTH_PER_LONG_SIDE[width] * max(image.size) * rng.uniform(0.8, 1.25)
    pens = [_pen(max(base * k, 0.45)) for k in LEVEL_WIDTH]
    light, dark = Image.new("L", size, 0), Image.new("L", size, 0)
    draw_l, draw_d = ImageDraw.Draw(light), ImageDraw.Draw(dark)
    offset = np.array([box[0], box[1]], dtype=float)
    lengths = np.cumsum([len(p) for p, _ in pattern.walks])[:-1]
    projected = np.split(apply_h(h_screen, np.concatenate([p for p, _ in pattern.walks])) - offset, lengths)
    for pix, (_, level) in zip(projected, pattern.walks, strict=True):
        pen, ink = pens[level]
        for chunk, glint in _glint_chunks(rng, pix):
            xy = [tuple(p) for p in chunk.tolist()]
            alpha = min(1.0, ink * glint * LEVEL_STRENGTH[level])
            if tone in ("light", "mixed"):
                draw_l.line(xy, fill=int(255 * alpha * (0.7 if pen >= 3 else 1.0)), width=pen)
                if pen >= 3:
                    draw_l.line(xy, fill=int(255 * alpha), width=max(1, pen // 3))
            if tone in ("dark", "mixed"):
                draw_d.line(xy, fill=int(255 * alpha), width=pen + (max(1, pen // 2) if tone == "mixed" else 0))
    haze = Image.new("L", size, 0)
    draw_h = ImageDraw.Draw(haze)
    for shard in pattern.shards:
        draw_h.polygon([tuple(p) for p in (apply_h(h_screen, shard) - offset).tolist()], fill=int(rng.uniform(50, 110)))
    light_rgb = tuple(int(v) for v in np.clip(rng.uniform(205, 250) * rng.uniform(0.95, 1.03, 3), 0, 255))
    dark_rgb = tuple(int(v) for v in rng.uniform(8, 55) * np.ones(3))
    mask = np.zeros((size[1], size[0]), bool)
    if tone in ("dark", "mixed"):
        dark = ImageChops.multiply(dark, screen_mask)
        image.paste(dark_rgb, box, dark)
        mask |= np.asarray(dark) > 0
    if tone in ("light", "mixed"):
        light = ImageChops.multiply(light, screen_mask)
        mask |= np.asarray(light) > 0
        if pattern.shards:
            light = ImageChops.lighter(light, ImageChops.multiply(haze, screen_mask))
        image.paste(light_rgb, box, light)
    elif pattern.shards:
        image.paste(light_rgb, box, ImageChops.multiply(haze, screen_mask))
    return mask


def draw_lcd_bleed(
    image: Image.Image,
    rng: np.random.Generator,
    h_screen: np.ndarray,
    box: tuple[int, int, int, int],
    screen_mask: Image.Image,
    impact: np.ndarray,
    screen_size: tuple[float, float],
) -> None:
    """Broken-panel artefacts under the glass: an ink blot at the impact and a few coloured pixel columns."""
    sw, sh = screen_size
    offset = np.array([box[0], box[1]], dtype=float)
    size = (box[2] - box[0], box[3] - box[1])
    n = 14
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radius = min(sw, sh) * rng.uniform(0.08, 0.25) * rng.uniform(0.5, 1.2, n)
    blot = np.clip(impact + np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None], 0, [sw, sh])
    layer = Image.new("L", size, 0)
    outline = [tuple(p) for p in (apply_h(h_screen, blot) - offset).tolist()]
    ImageDraw.Draw(layer).polygon(outline, fill=int(rng.uniform(190, 250)))
    ink = (5, 5, 8) if rng.random() < 0.6 else (40, 10, 50)
    image.paste(ink, box, ImageChops.multiply(layer, screen_mask))
    lines = Image.new("L", size, 0)
    draw = ImageDraw.Draw(lines)
    width = max(1, round(max(image.size) / rng.uniform(250, 600)))
    for u in rng.uniform(0.05, 0.95, int(rng.integers(1, 6))) * sw:
        pix = apply_h(h_screen, np.array([[u, 0.0], [u, sh]])) - offset
        draw.line([tuple(p) for p in pix.tolist()], fill=255, width=width)
    colour = ((240, 40, 200), (40, 230, 90), (250, 250, 250), (40, 220, 240))[int(rng.integers(4))]
    image.paste(colour, box, ImageChops.multiply(lines, screen_mask))
