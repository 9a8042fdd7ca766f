"""The room and the camera: table and wall backgrounds, soft shadows, lighting, colour, blur and sensor noise.

The background is rendered at reduced resolution (a perspective warp of a low-resolution texture of the
table plane, with a wall beyond the table's far edge), upscaled, and then gets its sharp line features
(marble veins, seams) at full resolution. Camera effects are applied once at the end.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from model.synth.geometry import Camera, apply_h, convex_hull
from model.synth.real_scenes import cover_crop
from model.synth.textures import base_colour, cell_size, fbm, surface_lines, surface_texture

CASTS = {
    "neutral": ((0.97, 1.03), (1.0, 1.0), (0.97, 1.03)),
    "warm": ((1.05, 1.16), (1.0, 1.0), (0.78, 0.92)),
    "cool": ((0.84, 0.95), (1.0, 1.0), (1.05, 1.16)),
    "daylight": ((1.0, 1.05), (1.0, 1.0), (0.94, 0.99)),
    "green_fluorescent": ((0.82, 0.9), (1.05, 1.12), (0.82, 0.92)),
    "magenta": ((1.06, 1.14), (0.84, 0.9), (1.04, 1.12)),
}


AUTO_EXPOSURE_TARGET = 112.0  # mean grey level the simulated phone exposes for (before exposure_ev)


def _low_res(size: tuple[int, int]) -> tuple[int, int, float]:
    factor = max(1.0, max(size) / 224)
    return max(int(size[0] / factor), 8), max(int(size[1] / factor), 8), factor


def render_background(
    rng: np.random.Generator,
    camera: Camera,
    size: tuple[int, int],
    factors: dict[str, Any],
    far_edge: float,
    casters: list[np.ndarray],
    picture: Image.Image | None = None,
) -> Image.Image:
    """Table (``factors['surface']``) out to ``far_edge`` (world y, mm), wall (``factors['wall']``) beyond it.

    Each array in ``casters`` (world points of an object on the table) casts a soft shadow on the table. With a real
    ``picture``, ``factors['photo_use']`` says where it goes: the table's surface, or the whole frame (``backdrop``).
    """
    if picture is not None and factors.get("photo_use") == "backdrop":
        return cover_crop(rng, picture, size)
    lw, lh, factor = _low_res(size)
    on_table = _table_mask(camera, (lw, lh), factor, far_edge)
    canvas, lines = None, []
    if on_table.any():
        canvas, covered, lines = _table(rng, camera, size, factors, far_edge, factor, picture)
        on_table &= covered
    if not on_table.all():
        wall = _wall(rng, factors["wall"], (lh, lw))
        canvas = wall if canvas is None or not on_table.any() else np.where(on_table[..., None], canvas, wall)
    if casters:
        canvas = _shadows(rng, camera, canvas, factor, casters)
    image = Image.fromarray(canvas).resize(size, Image.Resampling.BILINEAR)
    _draw_lines(image, camera, lines, far_edge)
    return image


def _table(
    rng: np.random.Generator,
    camera: Camera,
    size: tuple[int, int],
    factors: dict[str, Any],
    far_edge: float,
    factor: float,
    picture: Image.Image | None = None,
) -> tuple[np.ndarray | None, np.ndarray, list]:
    """The table texture warped to the low-resolution canvas, where it covers, and its full-resolution lines."""
    lw, lh = max(int(size[0] / factor), 8), max(int(size[1] / factor), 8)
    gx, gy = np.meshgrid(np.linspace(0, size[0], 17), np.linspace(0, size[1], 13))
    world = camera.unproject_to_table(np.stack([gx.ravel(), gy.ravel()], 1))
    world = world[np.isfinite(world[:, 0]) & (world[:, 1] <= far_edge)]
    if not len(world):
        return None, np.zeros((lh, lw), bool), []
    reach = 8 * float(np.linalg.norm(world - camera.centre, axis=1).min()) + 300
    pts = camera.centre[:2] + np.clip(world[:, :2] - camera.centre[:2], -reach, reach)
    yaw = rng.uniform(0, 2 * np.pi)
    u_ax, v_ax = np.array([np.cos(yaw), np.sin(yaw)]), np.array([-np.sin(yaw), np.cos(yaw)])
    uv = np.stack([pts @ u_ax, pts @ v_ax], 1)
    margin = 0.04 * float(np.ptp(uv, axis=0).max()) + 5.0
    lo, hi = uv.min(0) - margin, uv.max(0) + margin
    mm_per_px = max(float((hi - lo).max()) / int(np.clip(max(size) / 3.4, 128, 800)), 0.25)
    shape = (int((hi[1] - lo[1]) / mm_per_px) + 2, int((hi[0] - lo[0]) / mm_per_px) + 2)
    if picture is not None:
        tex = cover_crop(rng, picture, (shape[1], shape[0]), (0.3, 1.0))
    else:
        family = factors["surface"]
        colour = base_colour(rng, family, factors["surface_tone"])
        cell = cell_size(rng, family)
        tex = Image.fromarray(surface_texture(rng, family, colour, shape, mm_per_px, cell))
    origin = np.array([*(lo[0] * u_ax + lo[1] * v_ax), 0.0])
    h_table = camera.plane(origin, np.array([*u_ax, 0.0]), np.array([*v_ax, 0.0]))
    inv = np.linalg.inv(np.diag([1 / factor, 1 / factor, 1.0]) @ h_table @ np.diag([mm_per_px, mm_per_px, 1.0]))
    coeffs = tuple((inv / inv[2, 2]).ravel()[:8])
    warped = np.asarray(tex.transform((lw, lh), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR))
    covered = Image.new("L", tex.size, 255).transform(
        (lw, lh), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.NEAREST
    )
    extent = (0.0, 0.0, float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    if picture is not None:
        return warped, np.asarray(covered) > 0, []
    lines = [
        (h_table, poly, origin, u_ax, v_ax, width, rgb, alpha)
        for poly, width, rgb, alpha in surface_lines(rng, family, colour, extent, cell)
    ]
    return warped, np.asarray(covered) > 0, lines


def _table_mask(camera: Camera, low: tuple[int, int], factor: float, far_edge: float) -> np.ndarray:
    """Low-resolution pixels that see the table (below the horizon and nearer than ``far_edge``).

    A pixel's viewing ray is linear in the pixel coordinates, so both conditions are half-planes.
    """
    to_world = camera.rotation.T @ np.linalg.inv(camera.intrinsics)
    xs = (np.arange(low[0]) + 0.5) * factor
    ys = (np.arange(low[1]) + 0.5) * factor
    ray_y = to_world[1, 0] * xs[None, :] + to_world[1, 1] * ys[:, None] + to_world[1, 2]
    ray_z = to_world[2, 0] * xs[None, :] + to_world[2, 1] * ys[:, None] + to_world[2, 2]
    cy, cz = camera.centre[1], camera.centre[2]
    return (ray_z < 0) & ((cy - far_edge) * ray_z - cz * ray_y >= 0)


def _draw_lines(image: Image.Image, camera: Camera, lines: list, far_edge: float) -> None:
    if not lines:
        return
    layer = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(layer)
    colour = lines[0][6]
    for h_table, poly, origin, u_ax, v_ax, width, _, alpha in lines:
        world = origin[:2] + poly[:, :1] * u_ax + poly[:, 1:2] * v_ax
        depth = camera.camera_coords(np.c_[world, np.zeros(len(world))])[:, 2]
        ok = (depth > 1.0) & (world[:, 1] <= far_edge)
        pix = apply_h(h_table, poly)
        px_width = max(1, round(width * max(image.size)))
        run: list[tuple[float, float]] = []
        for p, good in zip(pix.tolist(), ok.tolist(), strict=True):
            if good:
                run.append((p[0], p[1]))
            elif run:
                if len(run) > 1:
                    draw.line(run, fill=int(255 * alpha), width=px_width)
                run = []
        if len(run) > 1:
            draw.line(run, fill=int(255 * alpha), width=px_width)
    box = layer.getbbox()
    if box is not None:
        image.paste(colour, box, layer.crop(box))


def _wall(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """A frontal wall (plain paint, brick or tiles) for the canvas ``shape``, made at half resolution."""
    half = (max(shape[0] // 2, 4), max(shape[1] // 2, 4))
    if kind == "paint":
        small = surface_texture(rng, "paint", base_colour(rng, "paint", "mid"), half, 1.0, 1.0)
    else:
        family = "brick" if kind == "brick" else "tiles"
        colour = base_colour(rng, family, "mid" if family == "brick" else "light")
        small = surface_texture(rng, family, colour, half, float(rng.uniform(8, 20)), cell_size(rng, family))
    return np.asarray(Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _shadows(
    rng: np.random.Generator, camera: Camera, canvas: np.ndarray, factor: float, casters: list[np.ndarray]
) -> np.ndarray:
    """Darken the low-resolution table under and beside each caster with a soft, light-shifted shadow."""
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)])
    strength = rng.uniform(0.25, 0.55)
    mask = Image.new("L", (canvas.shape[1], canvas.shape[0]), 0)
    draw = ImageDraw.Draw(mask)
    spread = 1.0
    for points in casters:
        pts = points.copy()
        pts[:, :2] += pts[:, 2:3] * light
        pts[:, 2] = 0.0
        if (camera.camera_coords(pts)[:, 2] <= 1.0).any():
            continue
        hull = convex_hull(camera.project(pts) / factor)
        spread = max(spread, float(np.ptp(hull, axis=0).max()))
        draw.polygon([tuple(p) for p in hull.tolist()], fill=int(255 * strength))
    mask = mask.filter(ImageFilter.BoxBlur(max(1.0, spread * rng.uniform(0.02, 0.05))))
    shade = 255 - np.asarray(mask, np.uint16)[..., None]
    return ((canvas * shade) >> 8).astype(np.uint8)


def light_field(rng: np.random.Generator, factors: dict[str, Any]) -> np.ndarray:
    """A small (24, 32) multiplicative light field in (0, 1]: gradient, vignetting, a soft shadow blob."""
    gw, gh = 32, 24
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    xx, yy = xx / (gw - 1) - 0.5, yy / (gh - 1) - 0.5
    a = rng.uniform(0, 2 * np.pi)
    field = 1.0 - factors["light_gradient"] * (0.5 + xx * np.cos(a) + yy * np.sin(a))
    field *= 1.0 - factors["vignette"] * np.clip((xx**2 + yy**2) * 2.0, 0, 1)
    if rng.random() < 0.25:
        field *= 1.0 - rng.uniform(0.15, 0.4) * np.clip(fbm(rng, (gh, gw), 2) * 3 + 0.5, 0, 1)
    return np.clip(field, 0.2, 1.0)


def colour_response(
    image: Image.Image, rng: np.random.Generator, factors: dict[str, Any], brighten: float
) -> Image.Image:
    """White balance, exposure (auto gain ``brighten`` times ``2**exposure_ev``), a shadow-lifting tone curve
    and contrast, as one per-channel lookup table."""
    gains = np.array([rng.uniform(*r) for r in CASTS[factors["color_cast"]]]) * 2 ** factors["exposure_ev"] * brighten
    gamma = rng.uniform(0.85, 1.0)
    x = np.arange(256, dtype=np.float64) / 255
    luts = []
    for g in gains:
        v = np.clip(x * g, 0, 1) ** gamma
        v = np.clip(0.5 + (v - 0.5) * factors["contrast"], 0, 1)
        luts.append(np.round(v * 255).astype(np.uint8))
    return image.point(np.concatenate(luts).tolist())


def camera_blur(image: Image.Image, rng: np.random.Generator, factors: dict[str, Any]) -> Image.Image:
    """Defocus (box-filter down and bilinear back up) or one-axis motion blur, scaled with resolution."""
    kind = factors["blur"]
    if kind == "none":
        return image
    r = factors["blur_amount"] * max(image.size) / 512
    if kind == "defocus":
        k = max(2, round(2 * r * float(rng.uniform(0.8, 1.6))))
        return image.reduce(k).resize(image.size, Image.Resampling.BILINEAR)
    long_r, short_r = r * rng.uniform(1.5, 3.5), 0.0
    radius = (long_r, short_r) if rng.random() < 0.5 else (short_r, long_r)
    return image.filter(ImageFilter.BoxBlur(radius))


@lru_cache(maxsize=1)
def _noise_bank() -> Image.Image:
    """A fixed RGB image of Gaussian noise (std 32 around 128) that photos crop at a random offset."""
    noise = np.random.default_rng(20240611).normal(128, 32, (1024, 1024, 3))
    return Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))


def light_and_noise(image: Image.Image, rng: np.random.Generator, field: np.ndarray, sigma: float) -> Image.Image:
    """Multiply by the light ``field`` and add Gaussian sensor noise of std ``sigma`` (grey levels).

    The noise is added before the tone curve (see :func:`develop`), which lifts shadows and compresses
    highlights, so it ends up stronger in dark regions, like real phone photos.
    """
    w, h = image.size
    if field.min() < 0.97:
        light = Image.fromarray((field * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
        image = Image.composite(image, Image.new("RGB", (w, h)), light)
    bank = _noise_bank()
    n = bank.width
    if w > n or h > n:
        tiled = Image.new("RGB", ((w // n + 1) * n, (h // n + 1) * n))
        for ty in range(0, tiled.height, n):
            for tx in range(0, tiled.width, n):
                tiled.paste(bank, (tx, ty))
        bank = tiled
    x = int(rng.integers(0, bank.width - w + 1))
    y = int(rng.integers(0, bank.height - h + 1))
    noise = Image.blend(
        Image.new("RGB", (w, h), (128, 128, 128)), bank.crop((x, y, x + w, y + h)), min(sigma / 32, 1.0)
    )
    return ImageChops.add(image, noise, 1.0, -128)


def develop(image: Image.Image, rng: np.random.Generator, factors: dict[str, Any]) -> Image.Image:
    """The camera: blur, light fall-off and sensor noise, then auto-exposure, white balance and tone curve."""
    field = light_field(rng, factors)
    image = camera_blur(image, rng, factors)
    image = light_and_noise(image, rng, field, factors["noise_sigma"])
    thumb = image.reduce(max(1, min(image.size) // 24))
    mean = float(np.asarray(thumb, np.float32).mean())
    return colour_response(image, rng, factors, float(np.clip(AUTO_EXPOSURE_TARGET / max(mean, 1.0), 0.7, 1.8)))
