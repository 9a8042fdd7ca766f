"""What a screen shows: app-like UI, wallpapers, photos, text, video, a held-out map, or dark glass.

Content is drawn flat at about the size it will occupy in the photo and then warped onto the screen plane.
Reflections and glare are added in screen space too, since they live on the glass.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from model.synth.real_scenes import cover_crop
from model.synth.textures import fbm, value_noise

ACCENTS = (
    (30, 110, 230),
    (230, 70, 60),
    (40, 170, 90),
    (250, 180, 30),
    (140, 80, 200),
    (20, 160, 170),
    (240, 100, 150),
)


def _rgb(c: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    a = np.clip(np.asarray(c, dtype=float), 0, 255).astype(int)
    return int(a[0]), int(a[1]), int(a[2])


def _accent(rng: np.random.Generator) -> np.ndarray:
    return np.array(ACCENTS[int(rng.integers(len(ACCENTS)))], dtype=float) * rng.uniform(0.85, 1.1)


def text_rows(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    box: tuple[float, float, float, float],
    line_h: float,
    colour: tuple[int, int, int],
    *,
    gap: float = 1.8,
    ragged: bool = True,
) -> None:
    """Fill ``box`` with rows of word-like bars (text seen from a distance)."""
    x0, y0, x1, y1 = box
    y = y0
    while y + line_h <= y1:
        x = x0
        end = x1 - (rng.uniform(0, 0.4) * (x1 - x0) if ragged and rng.random() < 0.3 else 0)
        while x < end:
            w = line_h * rng.uniform(1.2, 5.0)
            if x + w > end:
                break
            draw.rectangle((x, y, x + w, y + line_h * 0.62), fill=colour)
            x += w + line_h * 0.55
        y += line_h * gap


def _smooth(arr: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """An RGB image of ``size`` upscaled from a small float array (smooth content is computed small)."""
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)


def _small(w: int, h: int) -> tuple[int, int]:
    k = max(1.0, max(w, h) / 64)
    return max(int(w / k), 2), max(int(h / k), 2)


def _gradient(w: int, h: int, a: np.ndarray, b: np.ndarray, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(w * abs(np.cos(angle)) + h * abs(np.sin(angle)), 1)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    w, h = _small(width, height)
    sky = np.array([rng.uniform(90, 200), rng.uniform(140, 210), rng.uniform(180, 250)])
    ground = np.array([rng.uniform(40, 140), rng.uniform(60, 150), rng.uniform(20, 100)])
    horizon = rng.uniform(0.3, 0.7)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    t = 1 / (1 + np.exp(-(yy - horizon - 0.15 * fbm(rng, (h, w), 2)[..., None]) * 25))
    img = sky * (1 - t) + ground * t
    img = img * (1 + 0.35 * fbm(rng, (h, w), 4, 3)[..., None]) + 60 * (
        value_noise(rng, (h, w), (3, 3))[..., None] - 0.5
    )
    return _smooth(img, (width, height))


def _ui(rng: np.random.Generator, w: int, h: int, dark: bool) -> Image.Image:
    bg = (
        np.array([rng.uniform(10, 40)] * 3)
        if dark
        else np.array([rng.uniform(232, 252)] * 3) * rng.uniform(0.97, 1.0, 3)
    )
    fg = _rgb(bg + (150 if dark else -170))
    card = _rgb(bg + (22 if dark else -14))
    accent = _accent(rng)
    img = Image.new("RGB", (w, h), _rgb(bg))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    text_rows(d, rng, (3 * u, 1 * u, w - 3 * u, 4 * u), 2.2 * u, fg, ragged=False)
    top = 6 * u
    if rng.random() < 0.7:
        d.rectangle((0, top, w, top + 12 * u), fill=_rgb(accent))
        text_rows(d, rng, (5 * u, top + 4 * u, w * 0.6, top + 9 * u), 4 * u, (250, 250, 250))
        top += 15 * u
    landscape = w > h * 1.2
    cols = 2 if landscape else 1
    cw = (w - 4 * u * (cols + 1)) / cols
    y = top
    while y < h - 14 * u:
        ch = rng.uniform(10, 28) * u
        for c in range(cols):
            x = 4 * u + c * (cw + 4 * u)
            d.rounded_rectangle((x, y, x + cw, y + ch), radius=2 * u, fill=card)
            if rng.random() < 0.5:
                d.ellipse((x + 2 * u, y + 2 * u, x + 8 * u, y + 8 * u), fill=_rgb(_accent(rng)))
            text_rows(d, rng, (x + 10 * u, y + 2.5 * u, x + cw - 3 * u, y + ch - 2 * u), 2.6 * u, fg)
            if rng.random() < 0.25:
                d.rectangle((x + 3 * u, y + ch - 4 * u, x + cw - 3 * u, y + ch - 3.6 * u), fill=_rgb(accent))
        y += ch + 3 * u
        if rng.random() < 0.3:
            d.line((0, y - 1.5 * u, w, y - 1.5 * u), fill=fg, width=max(1, int(0.3 * u)))
    d.rectangle((0, h - 10 * u, w, h), fill=card)
    for i in range(5):
        cx = w * (i + 0.5) / 5
        d.rounded_rectangle(
            (cx - 2.5 * u, h - 7.5 * u, cx + 2.5 * u, h - 2.5 * u), radius=u, fill=_rgb(accent if i == 0 else fg)
        )
    return img


def _wallpaper(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    sw, sh = _small(w, h)
    arr = _gradient(sw, sh, _accent(rng), _accent(rng) * rng.uniform(0.3, 1.0), rng.uniform(0, np.pi))
    img = _smooth(arr * (1 + 0.4 * fbm(rng, (sh, sw), 2)[..., None]), (w, h))
    d = ImageDraw.Draw(img)
    cols = 4 if h >= w else 6
    s = w / cols
    for r in range(int(rng.integers(2, 6))):
        for c in range(cols):
            if rng.random() < 0.85:
                x, y = c * s + s * 0.18, s * 0.6 + r * s * 1.25
                d.rounded_rectangle((x, y, x + s * 0.64, y + s * 0.64), radius=s * 0.15, fill=_rgb(_accent(rng)))
    d.rounded_rectangle(
        (s * 0.2, h - s * 1.1, w - s * 0.2, h - s * 0.2), radius=s * 0.25, fill=_rgb(np.array([220] * 3) * 0.8)
    )
    return img


def _text(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    paper = np.array([rng.uniform(235, 252)] * 3) * np.array([1.0, 0.98, rng.uniform(0.88, 1.0)])
    img = Image.new("RGB", (w, h), _rgb(paper))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    text_rows(d, rng, (6 * u, 6 * u, w - 6 * u, 12 * u), 5 * u, (30, 30, 35))
    text_rows(d, rng, (6 * u, 16 * u, w - 6 * u, h - 5 * u), rng.uniform(2.2, 3.5) * u, (50, 50, 55))
    return img


def _video(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (0, 0, 0))
    vh = int(min(h, w * 9 / 16))
    y0 = (h - vh) // 2
    img.paste(_photo(rng, w, max(vh, 2)), (0, y0))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    bar = y0 + vh - 5 * u
    d.rectangle((4 * u, bar, w - 4 * u, bar + 0.8 * u), fill=(150, 150, 150))
    d.rectangle((4 * u, bar, 4 * u + (w - 8 * u) * rng.uniform(0.1, 0.9), bar + 0.8 * u), fill=(230, 40, 40))
    return img


def _map(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), _rgb((rng.uniform(232, 245), rng.uniform(228, 240), rng.uniform(215, 228))))
    d = ImageDraw.Draw(img)
    u = min(w, h) / 100
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d.ellipse((cx - 15 * u, cy - 10 * u, cx + 15 * u, cy + 10 * u), fill=(190, 225, 180))
    xs = np.linspace(-0.1, 1.1, 12) * w
    ys = h * (rng.uniform(0.2, 0.8) + 0.15 * np.sin(np.linspace(0, rng.uniform(2, 6), 12)))
    d.line(
        list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(160, 200, 240), width=max(2, int(5 * u)), joint="curve"
    )
    for _ in range(int(rng.integers(6, 14))):
        a = rng.uniform(0, np.pi)
        px, py, n = rng.uniform(0, w), rng.uniform(0, h), max(w, h)
        seg = (px - n * np.cos(a), py - n * np.sin(a), px + n * np.cos(a), py + n * np.sin(a))
        major = rng.random() < 0.3
        d.line(seg, fill=(200, 200, 200), width=max(2, int((3.4 if major else 2.2) * u)))
        d.line(seg, fill=(250, 210, 110) if major else (255, 255, 255), width=max(1, int((2.4 if major else 1.4) * u)))
    px, py = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    d.ellipse((px - 3 * u, py - 3 * u, px + 3 * u, py + 3 * u), fill=(230, 60, 50))
    return img


def _off(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = np.array([rng.uniform(6, 24)] * 3) * np.array([0.95, 1.0, rng.uniform(1.0, 1.25)])
    sw, sh = _small(w, h)
    img = Image.fromarray(
        np.clip(_gradient(sw, sh, base, base * rng.uniform(1.2, 2.6), rng.uniform(0, 2 * np.pi)), 0, 255).astype(
            np.uint8
        )
    )
    if rng.random() < 0.5:
        big = img.resize((sw * 2, sh * 2), Image.Resampling.BILINEAR)
        d = ImageDraw.Draw(big)
        x0, y0 = rng.uniform(-0.2, 0.6) * big.width, rng.uniform(-0.2, 0.6) * big.height
        x1, y1 = x0 + rng.uniform(0.2, 0.6) * big.width, y0 + rng.uniform(0.2, 0.6) * big.height
        d.rectangle((x0, y0, x1, y1), fill=_rgb(base + rng.uniform(15, 55)))
        if rng.random() < 0.6:
            d.line(((x0 + x1) / 2, y0, (x0 + x1) / 2, y1), fill=_rgb(base), width=max(1, int(big.width / 60)))
        img = big.filter(ImageFilter.BoxBlur(max(1.0, big.width / rng.uniform(25, 90))))
    return img.resize((w, h), Image.Resampling.BILINEAR)


CONTENT = {
    "ui_light": lambda rng, w, h: _ui(rng, w, h, dark=False),
    "ui_dark": lambda rng, w, h: _ui(rng, w, h, dark=True),
    "wallpaper": _wallpaper,
    "photo": _photo,
    "text": _text,
    "video": _video,
    "map": _map,
    "off": _off,
}


def add_glare(rng: np.random.Generator, img: Image.Image, strength: float) -> Image.Image:
    """Screen-blend a soft highlight band and a diffuse spot, as a light source reflected in the glass."""
    if strength <= 0:
        return img
    w, h = _small(*img.size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(w - 1, 1), yy / max(h - 1, 1)
    a = rng.uniform(0, np.pi)
    d = (xx - rng.uniform(0.2, 0.8)) * np.cos(a) + (yy - rng.uniform(0.2, 0.8)) * np.sin(a)
    band = np.exp(-((d / rng.uniform(0.05, 0.25)) ** 2)) * strength * rng.uniform(0.25, 0.6)
    sx, sy = rng.uniform(0, 1), rng.uniform(0, 1)
    spot = np.exp(-(((xx - sx) ** 2 + (yy - sy) ** 2) / rng.uniform(0.01, 0.06))) * strength * rng.uniform(0.1, 0.5)
    glare = Image.fromarray((np.clip(band + spot, 0, 0.95) * 255).astype(np.uint8)).resize(
        img.size, Image.Resampling.BILINEAR
    )
    return ImageChops.screen(img, Image.merge("RGB", (glare, glare, glare)))


def screen_content(
    rng: np.random.Generator, kind: str, size: tuple[int, int], glare: float, picture: Image.Image | None = None
) -> Image.Image:
    """An RGB image of ``size`` showing ``kind`` (a key of :data:`CONTENT`), with glare of ``glare`` in [0, 1].

    A real ``picture`` replaces the drawn content (a crop of it fills the screen).
    """
    w, h = max(size[0], 8), max(size[1], 8)
    content = CONTENT[kind](rng, w, h) if picture is None else cover_crop(rng, picture, (w, h))
    return add_glare(rng, content, glare)
