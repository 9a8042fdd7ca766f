"""Projective geometry: a pinhole camera looking at planes in a millimetre world, and plane-to-image warps.

The world frame is a table top seen from its front edge: ``x`` to the right, ``y`` away from the viewer,
``z`` up (right-handed), in millimetres. A plane's axes ``u`` (right) and ``v`` (down the content) make
``u x v`` point behind the plane, so content drawn on it reads correctly from the front.
Every flat thing in a scene (a screen, a sheet of paper, the table itself) is a plane given by an origin and
two axis vectors; :meth:`Camera.plane` turns it into a 3x3 homography from plane coordinates to pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Quad = np.ndarray  # (N, 2) float array of points


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world point ``P`` maps to pixel ``M @ R @ (P - C)`` (then divided by the last row)."""

    rotation: np.ndarray  # (3, 3) world -> camera axes (x right, y down, z forward)
    centre: np.ndarray  # (3,) camera position in the world
    intrinsics: np.ndarray  # (3, 3) camera -> pixels, including the placement in the frame

    @staticmethod
    def look_at(
        target: np.ndarray, elevation_deg: float, azimuth_deg: float, distance: float, roll_deg: float
    ) -> Camera:
        """A camera ``distance`` mm from ``target``, raised by ``elevation`` and swung round by ``azimuth``."""
        el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
        offset = np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)])
        centre = np.asarray(target, dtype=float) + distance * offset
        forward = -offset
        up = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
        right = _normalise(np.cross(forward, up))
        down = np.cross(forward, right)
        c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
        right, down = c * right + s * down, -s * right + c * down
        rotation = np.stack([right, down, forward])
        return Camera(rotation=rotation, centre=centre, intrinsics=np.eye(3))

    def camera_coords(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) in camera axes (N, 3); column 2 is the depth."""
        return (np.asarray(points, dtype=float) - self.centre) @ self.rotation.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) to pixels (N, 2)."""
        cam = self.camera_coords(points) @ self.intrinsics.T
        return cam[:, :2] / cam[:, 2:3]

    def plane(self, origin: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray) -> np.ndarray:
        """Homography from plane coordinates ``(u, v)`` (mm along the two axes) to pixels."""
        cols = np.stack([axis_u, axis_v, np.asarray(origin, dtype=float) - self.centre], axis=1)
        return self.intrinsics @ self.rotation @ cols

    def placed(self, points: np.ndarray, box: tuple[float, float, float, float]) -> Camera:
        """The same camera with a focal length and principal point that fit ``points``' bounding box to ``box``."""
        cam = self.camera_coords(points)
        xy = cam[:, :2] / cam[:, 2:3]
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        scale = min((box[2] - box[0]) / max(hi[0] - lo[0], 1e-9), (box[3] - box[1]) / max(hi[1] - lo[1], 1e-9))
        mid = (lo + hi) / 2
        tx = (box[0] + box[2]) / 2 - scale * mid[0]
        ty = (box[1] + box[3]) / 2 - scale * mid[1]
        k = np.array([[scale, 0.0, tx], [0.0, scale, ty], [0.0, 0.0, 1.0]])
        return Camera(rotation=self.rotation, centre=self.centre, intrinsics=k)

    def unproject_to_table(self, pixels: np.ndarray, height: float = 0.0) -> np.ndarray:
        """Pixels (N, 2) to world points on the plane ``z = height``; rows above the horizon become NaN."""
        rays = np.c_[pixels, np.ones(len(pixels))] @ np.linalg.inv(self.intrinsics).T @ self.rotation
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (height - self.centre[2]) / rays[:, 2]
        t = np.where(t > 0, t, np.nan)
        return self.centre + rays * t[:, None]


def apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply homography ``h`` to points (N, 2)."""
    pts = np.asarray(pts, dtype=float).reshape(-1, 2)
    out = pts @ h[:, :2].T + h[:, 2]
    return out[:, :2] / out[:, 2:3]


def rounded_rect(width: float, height: float, radius: float, per_corner: int = 5) -> Quad:
    """Outline of a rounded rectangle ``[0, width] x [0, height]`` as a polygon (N, 2)."""
    radius = float(min(radius, width / 2, height / 2))
    if radius <= 0:
        return np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=float)
    t = np.linspace(0, np.pi / 2, per_corner)
    arc = np.stack([np.cos(t), np.sin(t)], axis=1) * radius
    corners = [
        (np.array([width - radius, height - radius]), arc),
        (np.array([radius, height - radius]), arc[:, ::-1] * [-1, 1]),
        (np.array([radius, radius]), -arc),
        (np.array([width - radius, radius]), arc[:, ::-1] * [1, -1]),
    ]
    return np.concatenate([c + a for c, a in corners])


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> Quad:
    """An ellipse as a polygon (N, 2)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def bbox(pts: np.ndarray, size: tuple[int, int], pad: int = 1) -> tuple[int, int, int, int] | None:
    """Integer bounding box of ``pts`` clipped to an image of ``size``; None when it falls outside."""
    lo = np.floor(np.nanmin(pts, axis=0)).astype(int) - pad
    hi = np.ceil(np.nanmax(pts, axis=0)).astype(int) + pad
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), size[0]), min(int(hi[1]), size[1])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def polygon_mask(pts: np.ndarray, box: tuple[int, int, int, int], fill: int = 255) -> Image.Image:
    """An 'L' mask the size of ``box`` with the polygon ``pts`` (image coordinates) filled."""
    mask = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
    shifted = np.asarray(pts) - [box[0], box[1]]
    ImageDraw.Draw(mask).polygon([tuple(p) for p in shifted.tolist()], fill=fill)
    return mask


def warp_onto(
    image: Image.Image,
    content: Image.Image,
    h_plane: np.ndarray,
    plane_size: tuple[float, float],
    outline: np.ndarray | None = None,
    opacity: float = 1.0,
) -> tuple[int, int, int, int] | None:
    """Paint ``content`` (covering plane rectangle ``[0, w] x [0, h]``) onto ``image`` through ``h_plane``.

    ``outline`` is a polygon in plane coordinates that clips the paste (default: the plane rectangle). An
    RGBA ``content`` is pasted with its alpha. Returns the pixel box that was touched, or None.
    """
    pw, ph = plane_size
    if outline is None:
        outline = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=float)
    pix = apply_h(h_plane, outline)
    box = bbox(pix, image.size)
    if box is None:
        return None
    # Plane edges map one pixel inside the content, so nearest sampling at the outline never leaves it.
    scale = np.array([[(content.width - 2) / pw, 0.0, 1.0], [0.0, (content.height - 2) / ph, 1.0], [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, box[0]], [0.0, 1.0, box[1]], [0.0, 0.0, 1.0]])
    inverse = scale @ np.linalg.inv(h_plane) @ shift
    inverse = inverse / inverse[2, 2]
    size = (box[2] - box[0], box[3] - box[1])
    warped = content.transform(size, Image.Transform.PERSPECTIVE, tuple(inverse.ravel()[:8]), Image.Resampling.NEAREST)
    mask = polygon_mask(pix, box, fill=round(255 * float(opacity)))
    if warped.mode == "RGBA":
        alpha = warped.getchannel("A")
        mask = Image.fromarray((np.asarray(alpha, np.uint16) * np.asarray(mask, np.uint16) // 255).astype(np.uint8))
        warped = warped.convert("RGB")
    image.paste(warped, box[:2], mask)
    return box


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain) of 2-D points (N, 2)."""
    p = sorted(set(map(tuple, np.asarray(pts, dtype=float).tolist())))
    if len(p) < 3:
        return np.array(p, dtype=float).reshape(-1, 2)

    def half(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for q in points:
            while (
                len(out) >= 2
                and (out[-1][0] - out[-2][0]) * (q[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])
                <= 0
            ):
                out.pop()
            out.append(q)
        return out

    return np.array(half(p)[:-1] + half(p[::-1])[:-1], dtype=float)


def content_scale(
    h_plane: np.ndarray, plane_size: tuple[float, float], image_size: tuple[int, int], quality: float = 1.0
) -> float:
    """Pixels per mm for flat content that ``warp_onto`` will map through ``h_plane``.

    About the plane's largest on-screen magnification (times ``quality``), but never more than the photo
    itself needs.
    """
    w, h = plane_size
    c = apply_h(h_plane, np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]))
    edges = np.hypot(*(c - np.roll(c, -1, axis=0)).T) / np.array([w, h, w, h])
    return float(max(min(quality * edges.max(), 0.8 * max(image_size) / max(w, h)), 8.0 / min(w, h)))
