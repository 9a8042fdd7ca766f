"""Devices with screens (phones, tablets, laptops, monitors and the held-out handheld console).

A device is a list of flat parts in world millimetres (body slabs, bezels, keys, stand) plus one screen
plane. The same renderer draws intact devices for ``general_returns`` and cracked ones for ``screen_damage``,
so the device itself carries no label information.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from model.synth.geometry import (
    Camera,
    apply_h,
    content_scale,
    convex_hull,
    ellipse,
    polygon_mask,
    rounded_rect,
    warp_onto,
)
from model.synth.screens import screen_content

BODY_COLOURS = {
    "black": (28, 28, 31), "graphite": (72, 74, 79), "silver": (202, 204, 207), "white": (236, 236, 233),
    "gold": (222, 200, 166), "navy": (42, 56, 92), "rose": (226, 182, 172),
    "mint": (160, 222, 192), "coral": (240, 122, 100), "lilac": (192, 166, 226),
}  # fmt: skip
LIGHT = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])


@dataclass
class Part:
    """A flat polygon ``outline`` (plane mm) on the plane ``origin + x * u + y * v``, optionally a slab.

    ``outline`` may also be a (K, N, 2) stack of K polygons of one colour (keyboard keys).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    outline: np.ndarray
    colour: tuple[int, int, int]
    depth: float = 0.0

    def world(self, pts: np.ndarray, offset: float = 0.0) -> np.ndarray:
        """Plane points (N, 2) to world points (N, 3), ``offset`` mm behind the face."""
        base = self.origin + offset * np.cross(self.u, self.v) if offset else self.origin
        return base + pts[:, :1] * self.u + pts[:, 1:2] * self.v


@dataclass
class Device:
    """Parts in draw order and the screen plane (``screen`` is a Part whose outline is the glass)."""

    kind: str
    parts: list[Part]
    screen: Part
    screen_size: tuple[float, float]
    details: list[Part] = field(default_factory=list)  # drawn over the screen (camera hole)

    def points(self) -> np.ndarray:
        """World points that bound the device (for framing and shadows)."""
        slabs = [p for p in self.parts if p.depth > 0] or self.parts[:1]
        return np.concatenate([p.world(p.outline[::2], o) for p in slabs for o in (0.0, p.depth)])


def scaled(colour: tuple[int, int, int] | np.ndarray, k: float, add: float = 0.0) -> tuple[int, int, int]:
    """``colour * k + add`` clipped to a valid RGB triple."""
    r, g, b = (min(255, max(0, int(float(c) * k + add))) for c in colour)
    return r, g, b


def _shade(colour: tuple[int, int, int], normal: np.ndarray) -> tuple[int, int, int]:
    return scaled(colour, 0.62 + 0.38 * max(float(np.dot(normal, LIGHT)), 0.0), 6.0)


def _front(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    light_body = sum(colour) > 540 and rng.random() < 0.35
    g = int(rng.uniform(220, 240) if light_body else rng.uniform(8, 22))
    return g, g, g


def _slab_device(rng: np.random.Generator, kind: str, colour: tuple[int, int, int]) -> Device:
    if kind == "phone":
        w = rng.uniform(64, 78)
        h, t, rim, bezel = w * rng.uniform(1.95, 2.2), rng.uniform(7, 9.5), rng.uniform(0.8, 1.6), rng.uniform(1.2, 4)
        radius = w * rng.uniform(0.1, 0.16)
    elif kind == "tablet":
        w = rng.uniform(150, 200)
        h, t, rim, bezel = w * rng.uniform(1.3, 1.5), rng.uniform(6, 8), rng.uniform(1.0, 2.0), rng.uniform(5, 13)
        radius = w * rng.uniform(0.04, 0.08)
    else:
        w = rng.uniform(215, 250)
        h, t, rim, bezel = w * rng.uniform(0.42, 0.47), rng.uniform(12, 16), 0.0, 0.0
        radius = h * rng.uniform(0.3, 0.45)
    up, right, back = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    top = np.array([-w / 2, h / 2, t])

    def on_face(outline: np.ndarray, fill: tuple[int, int, int], depth: float = 0.0) -> Part:
        return Part(top, right, back, outline, fill, depth)

    body = on_face(rounded_rect(w, h, radius), colour, t)
    front = _front(colour, rng) if kind != "handheld_console" else colour
    face = on_face(rim + rounded_rect(w - 2 * rim, h - 2 * rim, radius - rim), _shade(front, up))
    parts, details = [body, face], []
    if kind == "handheld_console":
        sw, sh = h * 1.35, h * 0.78
        so = np.array([(w - sw) / 2, (h - sh) / 2])
        dark, button = (25, 25, 28), _shade((60, 60, 66), up)
        pad_x, btn_x, cy = (w - sw) / 4, w - (w - sw) / 4, h * 0.42
        parts.append(on_face(so - 2.5 + rounded_rect(sw + 5, sh + 5, 2.0), dark))
        parts += [
            on_face(rounded_rect(2 * a, 2 * b, 1.0) + np.array([pad_x - a, cy - b]), dark)
            for a, b in ((8, 2.6), (2.6, 8))
        ]
        parts += [
            on_face(ellipse(btn_x + x, cy + y, 2.6, 2.6, 12), button) for x, y in ((0, -6), (6, 0), (0, 6), (-6, 0))
        ]
        parts.append(on_face(ellipse(pad_x, h * 0.75, 6, 6, 16), (45, 45, 50)))
    else:
        sw, sh = w - 2 * rim - 2 * bezel, h - 2 * rim - 2 * bezel
        so = np.array([rim + bezel, rim + bezel])
        if kind == "phone" and bezel < 2.5:
            details.append(on_face(ellipse(w / 2, rim + bezel + sh * 0.025, 1.8, 1.8, 10), (6, 6, 8)))
        elif kind == "phone":
            parts.append(
                on_face(rounded_rect(w * 0.14, 1.0, 0.5) + np.array([w * 0.43, rim + bezel * 0.4]), (40, 40, 42))
            )
    screen_radius = 2.0 if kind == "handheld_console" else max(radius - rim - bezel, 0.6)
    screen = Part(top + so[0] * right + so[1] * back, right, back, rounded_rect(sw, sh, screen_radius), (0, 0, 0))
    return Device(kind, parts, screen, (sw, sh), details)


def _laptop(rng: np.random.Generator, colour: tuple[int, int, int]) -> Device:
    w = rng.uniform(300, 360)
    depth, lid_h, td, tl = (
        w * rng.uniform(0.64, 0.7),
        w * rng.uniform(0.6, 0.66),
        rng.uniform(10, 16),
        rng.uniform(4, 7),
    )
    angle = np.radians(rng.uniform(98, 128))
    right, back = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
    deck_o = np.array([-w / 2, 0.0, td])
    parts = [Part(deck_o, right, back, rounded_rect(w, depth, 8), colour, td)]
    up = np.array([0.0, 0.0, 1.0])
    keys_col = (22, 22, 24) if sum(colour) < 300 or rng.random() < 0.6 else _shade(colour, up)
    well = rounded_rect(w * 0.86, depth * 0.46, 3) + np.array([w * 0.07, depth * 0.06])
    parts.append(Part(deck_o, right, back, well, scaled(_shade(colour, up), 0.8)))
    kw, kh = w * 0.86 / 14, depth * 0.46 / 6
    cols, rows = np.meshgrid(np.arange(14), np.arange(6))
    corners = np.array([[0.0, 0.0], [kw * 0.8, 0.0], [kw * 0.8, kh * 0.76], [0.0, kh * 0.76]])
    offsets = np.stack([w * 0.07 + cols.ravel() * kw + kw * 0.1, depth * 0.06 + rows.ravel() * kh + kh * 0.12], 1)
    parts.append(Part(deck_o, right, back, corners[None] + offsets[:, None], keys_col))
    pad = rounded_rect(w * 0.38, depth * 0.34, 4) + np.array([w * 0.31, depth * 0.58])
    parts.append(Part(deck_o, right, back, pad, scaled(_shade(colour, up), 0.93)))
    lid_dir = np.array([0.0, -np.cos(angle), np.sin(angle)])
    lid_o = np.array([-w / 2, 0.0, td]) + lid_h * lid_dir
    lid_v = -lid_dir
    outward = -np.cross(right, lid_v)
    lid = Part(lid_o, right, lid_v, rounded_rect(w, lid_h, 8), _shade(colour, outward), tl)
    bezel, chin = rng.uniform(5, 12), rng.uniform(10, 22)
    front = _shade(_front(colour, rng), outward)
    face = Part(lid_o, right, lid_v, 1.0 + rounded_rect(w - 2, lid_h - 2, 7), front)
    sw, sh = w - 2 * bezel - 2, lid_h - bezel - chin - 2
    screen = Part(lid_o + (bezel + 1) * right + (bezel + 1) * lid_v, right, lid_v, rounded_rect(sw, sh, 1.0), (0, 0, 0))
    return Device("laptop", [*parts, lid, face], screen, (sw, sh))


def _monitor(rng: np.random.Generator, colour: tuple[int, int, int]) -> Device:
    w = rng.uniform(480, 700)
    h, lift, bezel, chin = w * rng.uniform(0.56, 0.6), rng.uniform(60, 140), rng.uniform(4, 16), rng.uniform(4, 24)
    right, down, toward = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])
    stand = _shade(colour if sum(colour) > 150 else (60, 60, 64), toward)
    base = Part(
        np.array([-w * 0.17, 60 + w * 0.08, 8.0]), right, toward, rounded_rect(w * 0.34, w * 0.16, 20), stand, 8
    )
    neck_w = w * rng.uniform(0.06, 0.1)
    neck = Part(
        np.array([-neck_w / 2, 50.0, lift + h * 0.6]), right, down, rounded_rect(neck_w, lift + h * 0.6, 6), stand, 12
    )
    origin = np.array([-w / 2, 0.0, lift + h])
    shell = Part(origin, right, down, rounded_rect(w, h, 6), _shade(colour, toward), 22)
    front = _front(colour, rng) if rng.random() < 0.5 else (14, 14, 16)
    face = Part(origin, right, down, 0.8 + rounded_rect(w - 1.6, h - 1.6, 5), front)
    sw, sh = w - 2 * bezel - 1.6, h - bezel - chin - 1.6
    screen = Part(
        origin + (bezel + 0.8) * right + (bezel + 0.8) * down, right, down, rounded_rect(sw, sh, 1.0), (0, 0, 0)
    )
    return Device("monitor", [base, neck, shell, face], screen, (sw, sh))


def build_device(rng: np.random.Generator, kind: str, palette: str) -> Device:
    """A device of ``kind`` in body colour ``palette`` (see :data:`BODY_COLOURS`), in world millimetres."""
    colour = scaled(BODY_COLOURS[palette], float(rng.uniform(0.93, 1.07)))
    if kind == "laptop":
        return _laptop(rng, colour)
    if kind == "monitor":
        return _monitor(rng, colour)
    return _slab_device(rng, kind, colour)


def draw_part(image: Image.Image, camera: Camera, part: Part) -> np.ndarray:
    """Draw ``part`` (slab sides first, then the face); returns the face polygon in pixels."""
    draw = ImageDraw.Draw(image)
    if part.outline.ndim == 3:
        k, n, _ = part.outline.shape
        polys = camera.project(part.world(part.outline.reshape(-1, 2))).reshape(k, n, 2)
        for poly in polys.tolist():
            draw.polygon([tuple(p) for p in poly], fill=part.colour)
        return polys.reshape(-1, 2)
    top = camera.project(part.world(part.outline))
    if part.depth > 0:
        both = np.concatenate([top, camera.project(part.world(part.outline, part.depth))])
        side = scaled(part.colour, 0.62)
        draw.polygon([tuple(p) for p in convex_hull(both).tolist()], fill=side)
    draw.polygon([tuple(p) for p in top.tolist()], fill=part.colour)
    return top


@dataclass
class DrawnScreen:
    """Where a device's screen landed: plane->pixel homography, pixel outline, box and 'L' mask of the box."""

    homography: np.ndarray
    outline: np.ndarray
    box: tuple[int, int, int, int] | None
    mask: Image.Image | None


def draw_device(
    image: Image.Image,
    camera: Camera,
    device: Device,
    rng: np.random.Generator,
    content: str,
    glare: float,
    picture: Image.Image | None = None,
) -> DrawnScreen:
    """Draw ``device`` with ``content`` (or a real ``picture``) on its screen; details over the glass are drawn by
    :func:`finish_device`."""
    for part in device.parts:
        draw_part(image, camera, part)
    s = device.screen
    h = camera.plane(s.origin, s.u, s.v)
    sw, sh = device.screen_size
    outline = apply_h(h, s.outline)
    scale = content_scale(h, (sw, sh), image.size)
    pixels = screen_content(rng, content, (int(sw * scale), int(sh * scale)), glare, picture)
    box = warp_onto(image, pixels, h, (sw, sh), s.outline)
    mask = polygon_mask(outline, box) if box is not None else None
    return DrawnScreen(h, outline, box, mask)


def finish_device(image: Image.Image, camera: Camera, device: Device) -> None:
    """Draw what sits on top of the glass (front camera hole)."""
    for part in device.details:
        draw_part(image, camera, part)


def _moved(part: Part, rotation: np.ndarray, shift: np.ndarray) -> Part:
    return dataclasses.replace(part, origin=rotation @ part.origin + shift, u=rotation @ part.u, v=rotation @ part.v)


@dataclass
class DeviceProp:
    """An intact phone lying on the table beside the subject (clutter shared by both classes)."""

    device: Device
    content: str
    glare: float

    def points(self) -> np.ndarray:
        """World points that bound the phone."""
        return self.device.points()

    def draw(self, image: Image.Image, camera: Camera, rng: np.random.Generator) -> None:
        """Draw the phone with its screen content."""
        draw_device(image, camera, self.device, rng, self.content, self.glare)
        finish_device(image, camera, self.device)


def make_device_prop(
    rng: np.random.Generator, centre: np.ndarray, contents: list[str], palettes: list[str]
) -> DeviceProp:
    """An intact phone at ``centre`` (x, y) with a random yaw, content from ``contents`` or off."""
    device = build_device(rng, "phone", palettes[int(rng.integers(len(palettes)))])
    yaw = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    shift = np.array([centre[0], centre[1], 0.0])
    moved = Device(
        device.kind,
        [_moved(p, rotation, shift) for p in device.parts],
        _moved(device.screen, rotation, shift),
        device.screen_size,
        [_moved(p, rotation, shift) for p in device.details],
    )
    content = "off" if rng.random() < 0.4 else contents[int(rng.integers(len(contents)))]
    return DeviceProp(moved, content, float(rng.uniform(0, 1)))
