"""Flat printed and packaging artwork: barcodes, shipping labels, documents, bubble wrap, crumpled paper, mailers.

Each function draws an image in the item's own plane; :mod:`model.synth.negatives` warps it onto the table.
All of it is dense in straight edges (bars, ruled lines, text rows, creases), which cracks must be told from.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from model.synth.devices import scaled
from model.synth.screens import text_rows
from model.synth.textures import value_noise

KRAFT = ((186, 146, 102), (170, 128, 86), (200, 166, 124), (226, 222, 214))


def barcode(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[float, float, float, float]) -> None:
    """Vertical bars of random widths filling ``box``."""
    x0, y0, x1, y1 = box
    unit = max((x1 - x0) / 90, 0.5)
    x = x0
    while x < x1 - 4 * unit:
        w = unit * int(rng.integers(1, 4))
        draw.rectangle((x, y0, x + w - 0.01, y1), fill=(15, 15, 15))
        x += w + unit * int(rng.integers(1, 4))


def label_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A shipping label: border, ruled sections, barcodes and text rows."""
    w, h = size
    img = Image.new("RGB", size, (248, 248, 244))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    lw = max(1, int(0.8 * u))
    d.rectangle((2 * u, 2 * u, w - 2 * u, h - 2 * u), outline=(20, 20, 20), width=lw)
    y = 2 * u
    for frac in np.sort(rng.uniform(0.15, 0.85, int(rng.integers(2, 5)))):
        y_next = frac * h
        if y_next - y > 8 * u:
            kind = rng.random()
            inner = (5 * u, y + 3 * u, w - 5 * u, y_next - 3 * u)
            if kind < 0.35:
                barcode(d, rng, inner)
            else:
                text_rows(d, rng, inner, rng.uniform(3, 6) * u, (25, 25, 25))
            d.line((2 * u, y_next, w - 2 * u, y_next), fill=(20, 20, 20), width=lw)
            y = y_next
    barcode(d, rng, (8 * u, y + 4 * u, w - 8 * u, h - 6 * u))
    return img


def document_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A printed page (invoice/return form): header, text rows, a ruled table, a barcode and a fold crease."""
    w, h = size
    paper = scaled((250, 249, 244), float(rng.uniform(0.93, 1.0)))
    img = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(img)
    u = w / 100
    d.rectangle((8 * u, 6 * u, 30 * u, 12 * u), fill=scaled((40, 90, 170), float(rng.uniform(0.6, 1.3))))
    text_rows(d, rng, (60 * u, 6 * u, 92 * u, 16 * u), 2.4 * u, (40, 40, 40))
    text_rows(d, rng, (8 * u, 22 * u, 92 * u, 45 * u), rng.uniform(1.8, 2.8) * u, (50, 50, 50))
    rows, cols, top = int(rng.integers(4, 9)), int(rng.integers(3, 6)), 50 * u
    rh = 5 * u
    for r in range(rows + 1):
        d.line((8 * u, top + r * rh, 92 * u, top + r * rh), fill=(90, 90, 90), width=max(1, int(0.25 * u)))
    for c in range(cols + 1):
        x = 8 * u + c * 84 * u / cols
        d.line((x, top, x, top + rows * rh), fill=(90, 90, 90), width=max(1, int(0.25 * u)))
    for r in range(rows):
        text_rows(d, rng, (10 * u, top + r * rh + 1.5 * u, 90 * u, top + r * rh + 4 * u), 2 * u, (60, 60, 60), gap=3)
    if rng.random() < 0.6:
        barcode(d, rng, (60 * u, h - 20 * u, 92 * u, h - 10 * u))
    text_rows(d, rng, (8 * u, top + rows * rh + 6 * u, 55 * u, h - 8 * u), 2.2 * u, (60, 60, 60))
    if rng.random() < 0.7:
        y = h * rng.uniform(0.3, 0.7)
        d.line((0, y, w, y), fill=scaled(paper, 0.86), width=max(1, int(0.4 * u)))
        d.line((0, y + 0.5 * u, w, y + 0.5 * u), fill=scaled(paper, 1.03, 4), width=max(1, int(0.4 * u)))
    return img


def bubble_wrap_image(rng: np.random.Generator, size: tuple[int, int], pitch_px: float) -> Image.Image:
    """RGBA translucent bubble wrap: a hex grid of bubbles with rims and specular dots."""
    w, h = size
    img = Image.new("RGBA", size, (240, 244, 246, int(rng.uniform(40, 80))))
    d = ImageDraw.Draw(img)
    r = pitch_px * 0.42
    for j, y in enumerate(np.arange(0, h + pitch_px, pitch_px * 0.87)):
        for x in np.arange((j % 2) * pitch_px / 2, w + pitch_px, pitch_px):
            d.ellipse((x - r, y - r, x + r, y + r), fill=(250, 252, 252, 70), outline=(170, 180, 185, 150))
            d.ellipse((x - r * 0.5, y - r * 0.6, x - r * 0.1, y - r * 0.2), fill=(255, 255, 255, 220))
    return img


def crumpled_paper_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Crumpled kraft packing paper: a jittered triangle mesh with random facet shading."""
    w, h = size
    base = np.array(KRAFT[int(rng.integers(len(KRAFT)))], dtype=float)
    img = Image.new("RGB", size, scaled(base, 1.0))
    d = ImageDraw.Draw(img)
    n = int(rng.integers(6, 12))
    gx, gy = np.meshgrid(np.linspace(0, w, n + 1), np.linspace(0, h, n + 1))
    pts = np.stack([gx, gy], -1) + rng.normal(0, 0.3 * w / n, (n + 1, n + 1, 2))
    for i in range(n):
        for j in range(n):
            a, b, c, e = pts[i, j], pts[i, j + 1], pts[i + 1, j + 1], pts[i + 1, j]
            for tri in ((a, b, c), (a, c, e)):
                d.polygon([tuple(p) for p in tri], fill=scaled(base, float(rng.uniform(0.72, 1.15))))
    return img


def envelope_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A padded mailer: bubbly fill, sealed edges, flap line and a stuck-on label."""
    w, h = size
    base = np.array(((236, 206, 120), (242, 242, 238), (196, 160, 116))[int(rng.integers(3))], dtype=float)
    bumps = 1 + 0.06 * (value_noise(rng, (h, w), (h // 6 + 2, w // 6 + 2)) - 0.5)
    img = Image.fromarray(np.clip(base * bumps[..., None], 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    d.rectangle((0, 0, w - 1, h - 1), outline=scaled(base, 0.85), width=max(1, int(3 * u)))
    d.line((0, 12 * u, w, 12 * u), fill=scaled(base, 0.8), width=max(1, int(0.6 * u)))
    lw, lh = int(w * 0.45), int(h * 0.35)
    img.paste(label_image(rng, (max(lw, 8), max(lh, 8))), (int(w * 0.3), int(h * 0.4)))
    return img
