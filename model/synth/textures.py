"""Surface textures (tables, floors, walls), generated at low resolution in millimetre plane coordinates.

Each family returns an ``(h, w, 3)`` uint8 array for a patch of ``h * mm_per_px`` by ``w * mm_per_px`` mm;
the scene warps it onto the table plane and upscales it. Thin, sharp features (marble veins, plank seams,
tile grout) are returned separately by :func:`surface_lines` and drawn at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from model.synth.cracks import branching_walk

Lines = list[tuple[np.ndarray, float, tuple[int, int, int], float]]  # (polyline mm, width rel., rgb, opacity)

BASE_COLOURS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "laminate": ((205, 198, 186), (122, 112, 100), (232, 232, 229), (92, 74, 60), (60, 60, 62)),
    "wood": ((152, 102, 62), (184, 138, 94), (112, 72, 42), (203, 164, 118)),
    "marble": ((234, 232, 228), (218, 214, 206), (58, 58, 62), (228, 218, 202)),
    "gravel": ((142, 136, 126), (168, 152, 132), (120, 118, 116)),
    "brick": ((152, 72, 52), (172, 98, 72), (122, 62, 46)),
    "tiles": ((222, 220, 212), (182, 182, 176), (202, 190, 170), (92, 97, 104)),
    "carpet": ((122, 112, 102), (82, 87, 97), (152, 132, 112), (102, 62, 62), (170, 168, 160)),
    "fabric": ((62, 72, 112), (152, 142, 132), (112, 42, 48), (72, 92, 72), (202, 197, 187), (40, 40, 44)),
    "concrete": ((152, 152, 150), (127, 124, 120), (172, 170, 164)),
    "terrazzo": ((226, 221, 213), (202, 202, 200), (214, 206, 192)),
    "paint": ((236, 234, 226), (214, 220, 222), (228, 218, 198), (190, 196, 188), (160, 170, 180)),
}
TONE_SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "light": lambda c: c + (255 - c) * 0.3,
    "mid": lambda c: c,
    "dark": lambda c: c * 0.6,
    "warm": lambda c: c * np.array([1.08, 1.0, 0.86]),
    "cool": lambda c: c * np.array([0.9, 0.98, 1.1]),
    "teal": lambda c: c.mean() * 0.35 + np.array([20, 150, 150]) * 0.75,
    "crimson": lambda c: c.mean() * 0.3 + np.array([170, 25, 45]) * 0.75,
}


def base_colour(rng: np.random.Generator, family: str, tone: str) -> np.ndarray:
    """The base RGB (float) of a surface family under a tone."""
    options = BASE_COLOURS[family]
    colour = np.array(options[int(rng.integers(len(options)))], dtype=np.float32)
    colour = colour * rng.uniform(0.93, 1.07, 3)
    return np.clip(TONE_SHIFTS[tone](colour), 8, 250).astype(np.float32)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1] with about ``cells`` (rows, cols) features, bilinearly interpolated."""
    grid = rng.random((max(cells[0], 2), max(cells[1], 2)), dtype=np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def fbm(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int = 3) -> np.ndarray:
    """Fractal noise (sum of value-noise octaves), roughly zero-mean, amplitude ~0.5."""
    out = np.zeros(shape, np.float32)
    aspect = shape[1] / max(shape[0], 1)
    amp = 0.5
    for i in range(octaves):
        c = cells * 2**i
        out += amp * (value_noise(rng, shape, (c, max(2, int(c * aspect)))) - 0.5)
        amp *= 0.5
    return out


def _coords(shape: tuple[int, int], mm_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    v = (np.arange(shape[0], dtype=np.float32) * mm_per_px)[:, None]
    u = (np.arange(shape[1], dtype=np.float32) * mm_per_px)[None, :]
    return u, v


def _shade(colour: np.ndarray, gain: np.ndarray) -> np.ndarray:
    return np.clip(gain[..., None] * colour, 0, 255).astype(np.uint8)


def _laminate(
    rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float
) -> np.ndarray:
    return _shade(colour, 1.0 + 0.06 * fbm(rng, shape, 3) + 0.025 * (rng.random(shape, np.float32) - 0.5))


def _wood(rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float) -> np.ndarray:
    v = _coords(shape, mm)[1]
    plank = cell
    idx = np.floor(v / plank).astype(int)
    per_plank = rng.uniform(0.86, 1.12, idx.max() + 2)[idx]
    phase = rng.uniform(0, 6.3, idx.max() + 2)[idx]
    warp = value_noise(rng, shape, (max(2, shape[0] // 6), 3)) * rng.uniform(6, 20)
    period = rng.uniform(3.5, 9.0)
    grain = np.sin(2 * np.pi * (v + warp) / period + phase)
    streak = value_noise(rng, shape, (max(2, shape[0] // 2), 4)) - 0.5
    gain = per_plank * (0.9 + 0.08 * grain + 0.14 * streak) + 0.04 * fbm(rng, shape, 2)
    return _shade(colour, gain)


def _marble(rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float) -> np.ndarray:
    h, w = shape
    dark = colour.mean() < 100
    clouds = 1.0 + 0.07 * fbm(rng, shape, 3, octaves=4)
    soft = Image.new("L", (w, h), 0)
    k = int(rng.integers(2, 6))
    starts = np.stack([rng.uniform(0, w, k), rng.uniform(0, h, k)], 1)
    bands = branching_walk(
        rng, starts, rng.uniform(0, 2 * np.pi, k), max(w, h) * rng.uniform(0.5, 1.2, k), max(w, h) / 25, (0, 0, w, h),
        wiggle=0.3, branch_p=0.05, depth=1,
    )  # fmt: skip
    draw = ImageDraw.Draw(soft)
    for pts, level in bands:
        draw.line(
            [tuple(p) for p in pts.tolist()],
            fill=int(rng.uniform(60, 140)),
            width=max(1, int(rng.uniform(2, 6) / (1 + level))),
        )
    soft = soft.filter(ImageFilter.BoxBlur(max(1.0, max(w, h) / rng.uniform(60, 150))))
    veins = np.asarray(soft, np.float32) / 255
    gain = clouds * (1.0 + (0.45 if dark else -0.3) * veins)
    return _shade(colour, gain)


def _stones(
    rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float, chips: bool
) -> np.ndarray:
    h, w = shape
    size = rng.uniform(8.0, 18.0) if chips else rng.uniform(6.0, 14.0)
    r = max(1.5, size / mm / 2)
    back = colour if chips else colour * 0.35
    img = Image.new("RGB", (w, h), tuple(int(c) for c in back))
    draw = ImageDraw.Draw(img)
    n = min(int(w * h / (r * r * (16.0 if chips else 2.6))), 1800)
    xs, ys = rng.uniform(-r, w + r, n), rng.uniform(-r, h + r, n)
    rx, ry = r * rng.uniform(0.6, 1.3, n), r * rng.uniform(0.6, 1.3, n)
    if chips:
        pal = np.array([[250, 250, 248], [40, 40, 42], [190, 110, 80], [120, 150, 120], [150, 150, 150]], np.float32)
        cols = pal[rng.integers(len(pal), size=n)] * rng.uniform(0.85, 1.1, (n, 1))
    else:
        cols = colour * rng.uniform(0.55, 1.3, (n, 1)) * rng.uniform(0.96, 1.04, (n, 3))
    cols = np.clip(cols, 0, 255).astype(int).tolist()
    for x, y, a, b, c in zip(xs.tolist(), ys.tolist(), rx.tolist(), ry.tolist(), cols, strict=True):
        rim = (int(c[0] * 0.6), int(c[1] * 0.6), int(c[2] * 0.6))
        draw.ellipse((x - a, y - b, x + a, y + b), fill=tuple(c), outline=None if chips else rim)
    arr = np.asarray(img, np.float32) * (1 + 0.08 * fbm(rng, shape, 4))[..., None]
    return np.clip(arr, 0, 255).astype(np.uint8)


def _grid(
    rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float, brick: bool
) -> np.ndarray:
    u, v = _coords(shape, mm)
    cw = cell
    ch = cw * 0.33 if brick else cw
    row = np.floor(v / ch).astype(int)
    uu = u + (row % 2) * cw / 2 if brick else u + 0 * row
    col = np.floor(uu / cw).astype(int)
    joint = rng.uniform(6, 12) if brick else rng.uniform(2, 5)
    fu, fv = uu - col * cw, v - row * ch
    mortar = (fu < joint) | (fv < joint)
    cells = (row.max() + 2, col.max() + 2)
    table = rng.uniform(0.8, 1.15, cells) if brick else rng.uniform(0.95, 1.04, cells)
    gain = table[row, col] * (1 + (0.12 if brick else 0.04) * (value_noise(rng, shape, (12, 12)) - 0.5))
    out = gain[..., None] * colour
    grout = np.array([190, 186, 178], np.float32) if brick or colour.mean() < 120 else colour * 0.75
    out[mortar] = grout
    return np.clip(out, 0, 255).astype(np.uint8)


def _paint(rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float) -> np.ndarray:
    ramp = np.linspace(rng.uniform(0.9, 1.05), rng.uniform(0.9, 1.05), shape[0], dtype=np.float32)[:, None]
    return _shade(colour, ramp + 0.05 * (value_noise(rng, shape, (4, 4)) - 0.5))


def _carpet(rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float) -> np.ndarray:
    grain = value_noise(rng, shape, (max(2, int(shape[0] / 1.5)), max(2, int(shape[1] / 1.5))))
    gain = 0.92 + 0.25 * (grain - 0.5) + 0.12 * fbm(rng, shape, 10, 2)
    return _shade(colour, gain)


def _fabric(rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float) -> np.ndarray:
    u, v = _coords(shape, mm)
    p = max(rng.uniform(1.5, 4.0), 2.2 * mm)
    weave = np.sin(2 * np.pi * u / p) * np.sin(2 * np.pi * v / p)
    folds = np.sin(2 * np.pi * (u * rng.uniform(-1, 1) + v) / rng.uniform(60, 200) + 6 * fbm(rng, shape, 2))
    gain = 0.95 + 0.06 * weave + 0.12 * folds * rng.uniform(0.3, 1.0) + 0.05 * (rng.random(shape, np.float32) - 0.5)
    return _shade(colour, gain)


def _concrete(
    rng: np.random.Generator, shape: tuple[int, int], mm: float, colour: np.ndarray, cell: float
) -> np.ndarray:
    speck = rng.random(shape, np.float32)
    gain = 1.0 + 0.16 * fbm(rng, shape, 5, 4) - 0.35 * (speck > 0.985) + 0.15 * (speck < 0.01)
    return _shade(colour, gain)


FAMILIES = {
    "laminate": _laminate,
    "paint": _paint,
    "wood": _wood,
    "marble": _marble,
    "gravel": lambda rng, s, mm, c, cell: _stones(rng, s, mm, c, cell, chips=False),
    "terrazzo": lambda rng, s, mm, c, cell: _stones(rng, s, mm, c, cell, chips=True),
    "brick": lambda rng, s, mm, c, cell: _grid(rng, s, mm, c, cell, brick=True),
    "tiles": lambda rng, s, mm, c, cell: _grid(rng, s, mm, c, cell, brick=False),
    "carpet": _carpet,
    "fabric": _fabric,
    "concrete": _concrete,
}


CELL_MM = {"wood": (70.0, 190.0), "brick": (180.0, 240.0), "tiles": (150.0, 400.0), "paint": (1.0, 1.0)}


def cell_size(rng: np.random.Generator, family: str) -> float:
    """The repeat size in mm (plank, brick or tile width) of ``family``; shared by texture and lines."""
    lo, hi = CELL_MM.get(family, (1.0, 1.0))
    return float(rng.uniform(lo, hi))


def surface_texture(
    rng: np.random.Generator, family: str, colour: np.ndarray, shape: tuple[int, int], mm_per_px: float, cell: float
) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 patch of ``family`` with base ``colour``; one pixel covers ``mm_per_px`` mm."""
    return FAMILIES[family](rng, shape, mm_per_px, colour, cell)


def surface_lines(
    rng: np.random.Generator, family: str, colour: np.ndarray, extent: tuple[float, float, float, float], cell: float
) -> Lines:
    """Sharp line features of ``family`` inside ``extent`` (u0, v0, u1, v1 in mm), drawn at full resolution."""
    u0, v0, u1, v1 = extent
    span = max(u1 - u0, v1 - v0)
    lines: Lines = []
    if family == "marble":
        dark = colour.mean() < 100
        vein = (236, 226, 200) if dark else tuple(int(c) for c in np.clip(colour * rng.uniform(0.35, 0.65), 0, 255))
        k = int(rng.integers(2, 7))
        starts = np.stack([rng.uniform(u0, u1, k), rng.uniform(v0, v1, k)], 1)
        veins = branching_walk(
            rng, starts, rng.uniform(0, 2 * np.pi, k), span * rng.uniform(0.3, 0.9, k), span / 60, (u0, v0, u1, v1),
            wiggle=0.22, branch_p=0.06, depth=2,
        )  # fmt: skip
        width = float(rng.choice([0.0012, 0.002, 0.0035], p=[0.4, 0.4, 0.2]))
        lines += [(w, width * (0.7 if lvl else 1.0), vein, float(rng.uniform(0.35, 0.85))) for w, lvl in veins]
    elif family in ("wood", "tiles"):
        step = cell
        seam = tuple(int(c) for c in colour * (0.45 if family == "wood" else 0.7))
        for v in np.arange(v0 - (v0 % step), v1, step)[:60]:
            lines.append((np.array([[u0, v], [u1, v]]), 0.0016, seam, 0.55))
        if family == "tiles":
            for u in np.arange(u0 - (u0 % step), u1, step)[:60]:
                lines.append((np.array([[u, v0], [u, v1]]), 0.0016, seam, 0.55))
    return lines
