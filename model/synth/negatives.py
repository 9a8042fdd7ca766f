"""Hard negatives for ``general_returns``: boxes, tape, labels, documents, cables, packaging, envelopes.

Every item lives on the table plane of the world (millimetres) so it shares the camera, perspective and
lighting of the devices. Many of them are full of straight lines (barcodes, text rows, tape edges, creases)
or curvy dark lines (cables), which a crack detector must learn to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from model.synth.devices import scaled
from model.synth.geometry import Camera, content_scale, warp_onto
from model.synth.paper import (
    KRAFT,
    bubble_wrap_image,
    crumpled_paper_image,
    document_image,
    envelope_image,
    label_image,
)
from model.synth.textures import value_noise

CABLE_COLOURS = ((236, 236, 232), (30, 30, 32), (120, 120, 124), (180, 40, 40), (40, 70, 160))


@dataclass
class Sheet:
    """A flat item lying on the table (a ``kind`` of :data:`SHEET_SIZES`): centre (x, y), yaw, size (w, h) mm."""

    kind: str
    centre: np.ndarray
    yaw: float
    size: tuple[float, float]
    lift: float = 0.3

    def plane(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Origin (the far-left corner) and the right/down axes of the sheet on the table."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        u, v = np.array([c, s, 0.0]), np.array([s, -c, 0.0])
        origin = np.array([*self.centre, self.lift]) - u * self.size[0] / 2 - v * self.size[1] / 2
        return origin, u, v

    def points(self) -> np.ndarray:
        """World points that bound the item (for framing and shadows)."""
        origin, u, v = self.plane()
        w, h = self.size
        return np.array([origin, origin + w * u, origin + w * u + h * v, origin + h * v])

    def draw(self, image: Image.Image, camera: Camera, rng: np.random.Generator) -> None:
        """Draw the item onto ``image`` as seen by ``camera``."""
        origin, u, v = self.plane()
        hom = camera.plane(origin, u, v)
        w, h = self.size
        scale = content_scale(hom, (w, h), image.size)
        px = (max(int(w * scale), 8), max(int(h * scale), 8))
        if self.kind == "document":
            content = document_image(rng, px)
        elif self.kind == "label":
            content = label_image(rng, px)
        elif self.kind == "bubble_wrap":
            content = bubble_wrap_image(rng, px, max(10.0 * scale, 3.0))
        elif self.kind == "padded_envelope":
            content = envelope_image(rng, px)
        else:
            content = crumpled_paper_image(rng, px)
        warp_onto(image, content, hom, (w, h))


SHEET_SIZES = {
    "document": ((210, 297), (216, 279)), "label": ((100, 150), (102, 152)), "bubble_wrap": ((200, 300), (260, 380)),
    "crumpled_paper": ((220, 300), (280, 360)), "padded_envelope": ((240, 340), (260, 360)),
}  # fmt: skip


def make_sheet(rng: np.random.Generator, kind: str, centre: np.ndarray, scale: float = 1.0) -> Sheet:
    """A sheet item of ``kind`` (see :data:`SHEET_SIZES`) centred at ``centre`` (x, y) on the table."""
    options = SHEET_SIZES[kind]
    w, h = options[int(rng.integers(len(options)))]
    return Sheet(kind, np.asarray(centre, float), float(rng.uniform(0, 2 * np.pi)), (w * scale, h * scale))


@dataclass
class Box:
    """A cardboard box on the table: centre, yaw, size (w, d, h) mm, colour, tape and label."""

    centre: np.ndarray
    yaw: float
    size: tuple[float, float, float]
    colour: tuple[int, int, int]

    def corners(self) -> np.ndarray:
        """The 8 world corners: bottom face first, then the top face, each going round."""
        w, d, h = self.size
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array(
            [[x, y, z] for z in (0, h) for x, y in ((-w / 2, -d / 2), (w / 2, -d / 2), (w / 2, d / 2), (-w / 2, d / 2))]
        )
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        return local @ rot.T + [*self.centre, 0.0]

    def points(self) -> np.ndarray:
        """World points that bound the item (for framing and shadows)."""
        return self.corners()

    def draw(self, image: Image.Image, camera: Camera, rng: np.random.Generator) -> None:
        """Draw the item onto ``image`` as seen by ``camera``."""
        k = self.corners()
        draw = ImageDraw.Draw(image)
        centre = k.mean(0)
        for idx in ((0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)):
            face = k[list(idx)]
            normal = np.cross(face[1] - face[0], face[3] - face[0])
            normal *= np.sign(np.dot(normal, face.mean(0) - centre))
            if np.dot(normal, camera.centre - face.mean(0)) > 0:
                lit = 0.55 + 0.3 * max(0.0, float(np.dot(normal / np.linalg.norm(normal), [0.4, 0.6, 0])))
                draw.polygon([tuple(p) for p in camera.project(face).tolist()], fill=scaled(self.colour, lit))
        w, d, _ = self.size
        top_o, u, v = k[7], (k[6] - k[7]) / w, (k[4] - k[7]) / d
        hom = camera.plane(top_o, u, v)
        scale = content_scale(hom, (w, d), image.size)
        size = (max(int(w * scale), 8), max(int(d * scale), 8))
        top = Image.fromarray(
            np.clip(
                np.array(self.colour, float) * (1 + 0.05 * (value_noise(rng, size[::-1], (6, 6)) - 0.5))[..., None],
                0,
                255,
            ).astype(np.uint8)
        )
        td = ImageDraw.Draw(top)
        seam_y = size[1] / 2
        td.line((0, seam_y, size[0], seam_y), fill=scaled(self.colour, 0.6), width=max(1, int(scale)))
        tape_h = 48 * scale
        tape = scaled((205, 172, 120), 1.0) if rng.random() < 0.5 else scaled(self.colour, 1.12, 18)
        td.rectangle((0, seam_y - tape_h / 2, size[0], seam_y + tape_h / 2), fill=tape)
        td.line(
            (0, seam_y - tape_h / 2, size[0], seam_y - tape_h / 2),
            fill=scaled(tape, 1.15, 10),
            width=max(1, int(scale)),
        )
        if rng.random() < 0.7:
            lw, lh = int(100 * scale), int(150 * scale)
            if lw < size[0] and lh < size[1]:
                x, y = int(rng.uniform(0, size[0] - lw)), int(rng.uniform(0, size[1] - lh))
                top.paste(label_image(rng, (max(lw, 8), max(lh, 8))), (x, y))
        warp_onto(image, top, hom, (w, d))


def make_box(rng: np.random.Generator, centre: np.ndarray, scale: float = 1.0) -> Box:
    """A random shipping box centred at ``centre`` (x, y)."""
    w = rng.uniform(200, 450) * scale
    colour = scaled(KRAFT[int(rng.integers(len(KRAFT)))], float(rng.uniform(0.9, 1.08)))
    return Box(
        np.asarray(centre, float),
        float(rng.uniform(0, np.pi)),
        (w, w * rng.uniform(0.55, 0.9), w * rng.uniform(0.25, 0.7)),
        colour,
    )


@dataclass
class Cable:
    """A cable lying on the table: a smooth curve in world mm with a diameter and colour."""

    path: np.ndarray  # (N, 3)
    diameter: float
    colour: tuple[int, int, int]

    def points(self) -> np.ndarray:
        """World points that bound the item (for framing and shadows)."""
        return self.path

    def draw(self, image: Image.Image, camera: Camera, rng: np.random.Generator) -> None:
        """Draw the item onto ``image`` as seen by ``camera``."""
        pix = camera.project(self.path)
        mid = self.path[len(self.path) // 2]
        side = camera.project(
            np.stack([mid, mid + np.array([self.diameter, 0, 0]), mid + np.array([0, self.diameter, 0])])
        )
        width = max(2, round(float(max(np.hypot(*(side[1] - side[0])), np.hypot(*(side[2] - side[0]))))))
        draw = ImageDraw.Draw(image)
        xy = [tuple(p) for p in pix.tolist()]
        shadow = [tuple(p) for p in (pix + width * 0.35).tolist()]
        draw.line(shadow, fill=scaled(self.colour, 0.25), width=width, joint="curve")
        draw.line(xy, fill=scaled(self.colour, 0.75), width=width, joint="curve")
        draw.line(xy, fill=self.colour, width=max(1, int(width * 0.6)), joint="curve")
        hi = [tuple(p) for p in (pix - width * 0.18).tolist()]
        draw.line(hi, fill=scaled(self.colour, 1.0, 60), width=max(1, int(width * 0.2)), joint="curve")
        d = pix[-1] - pix[-4]
        d = d / max(np.hypot(*d), 1e-6)
        n = np.array([-d[1], d[0]])
        e = pix[-1]
        plug = [
            e + n * width * 0.9,
            e + n * width * 0.9 + d * width * 3.2,
            e - n * width * 0.9 + d * width * 3.2,
            e - n * width * 0.9,
        ]
        draw.polygon([tuple(p) for p in plug], fill=scaled(self.colour, 0.9, 10))


def make_cable(rng: np.random.Generator, centre: np.ndarray, length: float) -> Cable:
    """A smooth random cable of ``length`` mm around ``centre`` (x, y)."""
    n = 80
    turns = np.convolve(rng.normal(0, 0.25, n + 8), np.ones(8) / 8, mode="valid")[:n]
    angles = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
    xy = np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1) * (length / n), 0)
    xy = xy - xy.mean(0) + centre
    diameter = float(rng.uniform(3, 6.5))
    path = np.c_[xy, np.full(n, diameter / 2)]
    return Cable(path, diameter, CABLE_COLOURS[int(rng.integers(len(CABLE_COLOURS)))])
