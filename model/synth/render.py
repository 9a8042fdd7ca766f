"""Composing one photo: world objects, camera framing, background, props, subject, occluders, camera effects."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from model.synth import cracks, damage, devices, negatives, occluders, scene
from model.synth.factors import (
    BODY_PALETTES,
    CLASSES,
    DAMAGE,
    PHOTO_SPLITS,
    RETURNS,
    SCREEN_CONTENTS,
    draw_factors,
    factor_rng,
    photo_rng,
    render_rng,
)
from model.synth.geometry import Camera, bbox
from model.synth.photo import SynthPhoto
from model.synth.real_photos import REAL_SPLIT, PhotoSet, pixels
from model.synth.real_scenes import crop_photo, draw_photo_factors

MAX_ATTEMPTS = 6
MIN_SIDE, MAX_SIDE = 16, 8192
CRACK_FACTORS = ("crack_style", "crack_extent", "crack_tone", "crack_width", "lcd_bleed")
LYING = ("phone", "tablet", "handheld_console")


def _subject(rng: np.random.Generator, factors: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """The main object and its bounding world points."""
    subject = factors["subject"]
    origin = np.zeros(2)
    if subject == "device":
        device = devices.build_device(rng, factors["device_kind"], factors["body_palette"])
        return device, device.points()
    if subject == "box":
        obj: Any = negatives.make_box(rng, origin)
    elif subject == "cable":
        obj = negatives.make_cable(rng, origin, float(rng.uniform(350, 900)))
    elif subject == "surface":
        side = rng.uniform(120, 500)
        return None, np.array([[-side, -side * 0.75, 0], [side, side * 0.75, 0]]) / 2
    else:
        kind = {"packaging": str(rng.choice(["bubble_wrap", "crumpled_paper"]))}.get(subject, subject)
        obj = negatives.make_sheet(rng, kind, origin)
    return obj, obj.points()


def _camera(rng: np.random.Generator, factors: dict[str, Any], pts: np.ndarray, size: tuple[int, int]) -> Camera:
    kind = factors.get("device_kind")
    if kind == "monitor":
        el, az = rng.uniform(2, 25), rng.uniform(-30, 30)
    elif kind == "laptop":
        el, az = rng.uniform(18, 55), rng.uniform(-35, 35)
    elif kind in LYING:
        el = rng.uniform(48, 88)
        az = float(rng.choice([0, 90, 180, 270], p=[0.6, 0.15, 0.1, 0.15])) + rng.normal(0, 12)
    else:
        el, az = rng.uniform(40, 88), rng.uniform(0, 360)
    extent = float(np.ptp(pts, axis=0).max())
    target = (pts.min(0) + pts.max(0)) / 2
    cam = Camera.look_at(target, el, az, extent * rng.uniform(1.3, 3.0), rng.normal(0, 4))
    w, h = size
    crop = factors["occluder"] == "crop"
    frac = rng.uniform(0.95, 1.35) if crop else rng.uniform(0.5, 0.92)
    if factors["subject"] == "surface":
        frac = rng.uniform(1.0, 1.4)
    bw, bh = w * frac, h * frac
    cx = w / 2 + rng.uniform(-0.5, 0.5) * abs(w - bw) * (0.6 if crop else 1.0)
    cy = h / 2 + rng.uniform(-0.5, 0.5) * abs(h - bh) * (0.6 if crop else 1.0)
    return cam.placed(pts, (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))


def _props(rng: np.random.Generator, camera: Camera, factors: dict[str, Any], size: tuple[int, int]) -> list[Any]:
    """Clutter on the table (cables, labels, boxes, bubble wrap, an intact phone) at random visible spots."""
    out: list[Any] = []
    w, h = size
    for name in (p for p in factors["props"].split(",") if p):
        spot = camera.unproject_to_table(np.array([[rng.uniform(0.05, 0.95) * w, rng.uniform(0.35, 1.0) * h]]))[0]
        if not np.isfinite(spot).all():
            continue
        centre = spot[:2]
        if name == "cable":
            obj: Any = negatives.make_cable(rng, centre, float(rng.uniform(200, 500)))
        elif name == "box":
            obj = negatives.make_box(rng, centre, float(rng.uniform(0.6, 1.0)))
        elif name == "phone":
            obj = devices.make_device_prop(rng, centre, list(SCREEN_CONTENTS), list(BODY_PALETTES))
        else:
            obj = negatives.make_sheet(rng, name, centre, 0.6 if name == "bubble_wrap" else 1.0)
        if (camera.camera_coords(obj.points())[:, 2] > 1.0).all():
            out.append(obj)
    return out


def _finger_target(rng: np.random.Generator, outline: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
    if outline is None:
        return np.array([rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1]])
    centre = outline.mean(0)
    edge = outline[int(rng.integers(len(outline)))]
    return edge + (centre - edge) * rng.uniform(0.0, 0.25)


def _compose(
    rng: np.random.Generator,
    factors: dict[str, Any],
    size: tuple[int, int],
    twin: bool = False,
    picture: Image.Image | None = None,
) -> tuple[SynthPhoto, SynthPhoto | None] | None:
    """Draw one photo; with ``twin``, also its intact twin: the same photo, pixel for pixel, without the fracture.
    A real ``picture`` goes where ``factors["photo_use"]`` says (``model.synth.real_scenes``).

    Returns None when the layout is unusable (the caller re-rolls).
    """
    use = factors.get("photo_use", "none")
    w, h = size
    label = factors["label"]
    subject, pts = _subject(rng, factors)
    camera = _camera(rng, factors, pts, size)
    if (camera.camera_coords(pts)[:, 2] <= 1.0).any():
        return None
    upright = factors.get("device_kind") in ("monitor", "laptop")
    far_edge = rng.uniform(150, 700) if upright else rng.uniform(800, 3000)
    props = _props(rng, camera, factors, size)
    casters = [p.points() for p in props if isinstance(p, negatives.Box | devices.DeviceProp)]
    if factors["subject"] not in ("surface", "cable"):
        casters.append(pts)
    image = scene.render_background(
        rng, camera, size, factors, far_edge, casters, picture if use in ("surface", "backdrop") else None
    )
    for prop in props:
        prop.draw(image, camera, rng)
    crack_mask: np.ndarray | None = None
    screen_box = None
    outline = None
    drawn = None
    intact = None
    if isinstance(subject, devices.Device):
        on_screen = picture if use == "screen" else None
        drawn = devices.draw_device(image, camera, subject, rng, factors["screen_content"], factors["glare"], on_screen)
        outline = drawn.outline
        screen_box = bbox(outline, size, pad=0)
        if screen_box is None or drawn.box is None or drawn.mask is None:
            return None
        if label == DAMAGE:
            intact = image.copy() if twin else None
            pattern = cracks.crack_pattern(rng, factors["crack_style"], factors["crack_extent"], *subject.screen_size)
            box_mask = damage.draw_cracks(
                image, pattern, drawn.homography, drawn.box, drawn.mask,
                width=factors["crack_width"], tone=factors["crack_tone"], rng=rng,
            )  # fmt: skip
            if factors["lcd_bleed"]:
                damage.draw_lcd_bleed(
                    image, rng, drawn.homography, drawn.box, drawn.mask, pattern.impacts[0], subject.screen_size
                )
            crack_mask = np.zeros((h, w), bool)
            x0, y0, x1, y1 = drawn.box
            crack_mask[y0:y1, x0:x1] = box_mask
            if intact is not None:
                devices.finish_device(intact, camera, subject)
        devices.finish_device(image, camera, subject)
    elif subject is not None:
        subject.draw(image, camera, rng)
    state = rng.bit_generator.state  # the twin replays the same occluder and camera effects
    hidden = _occlude(rng, image, factors, outline, drawn, subject, size)
    if crack_mask is not None:
        if hidden is not None:
            crack_mask &= np.asarray(hidden) == 0
        if crack_mask.sum() < 25 * max(size) / 512:
            return None
    photo = _photo(scene.develop(image, rng, factors), factors, crack_mask, screen_box)
    if intact is None:
        return photo, None
    rng.bit_generator.state = state
    _occlude(rng, intact, factors, outline, drawn, subject, size)
    intact_factors = {k: v for k, v in factors.items() if k not in CRACK_FACTORS} | {"label": RETURNS, "twin": True}
    return photo, _photo(scene.develop(intact, rng, factors), intact_factors, None, screen_box)


def _occlude(
    rng: np.random.Generator,
    image: Any,
    factors: dict[str, Any],
    outline: np.ndarray | None,
    drawn: Any,
    subject: Any,
    size: tuple[int, int],
) -> Any:
    """Draw the photo's occluder, if any, onto ``image``; returns the occluder's mask (None without one)."""
    occluder = factors["occluder"]
    if occluder == "finger":
        return occluders.draw_finger(image, rng, _finger_target(rng, outline, size), factors["skin_tone"])
    if occluder == "sticker" and drawn is not None:
        return occluders.draw_sticker(image, rng, drawn.homography, subject.screen_size)
    return None


def _photo(
    image: Any, factors: dict[str, Any], crack_mask: np.ndarray | None, screen_box: tuple[int, int, int, int] | None
) -> SynthPhoto:
    out = dict(factors)
    if crack_mask is not None and screen_box is not None:
        ys, xs = np.nonzero(crack_mask)
        area = (screen_box[2] - screen_box[0]) * (screen_box[3] - screen_box[1])
        out["crack_cover"] = round(float((np.ptp(xs) + 1) * (np.ptp(ys) + 1) / max(area, 1)), 4)
    return SynthPhoto(
        image=image, label=out["label"], crack_mask=crack_mask, screen_box=screen_box, factors=out,
        exif_orientation=int(factors["exif_orientation"]), jpeg_quality=int(factors["jpeg_quality"]),
    )  # fmt: skip


def _check_args(seed: int, label: str, split: str, size: tuple[int, int] | None, photos: PhotoSet | None) -> None:
    if label not in CLASSES:
        raise ValueError(f"label must be one of {CLASSES}, got {label!r}")
    if split not in PHOTO_SPLITS:
        raise ValueError(f"split must be one of {PHOTO_SPLITS}, got {split!r}")
    if split == REAL_SPLIT and photos is None:
        raise ValueError("the real split is built on real photos: give photos")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if size is not None and (
        len(size) != 2 or not all(isinstance(v, int | np.integer) and MIN_SIDE <= v <= MAX_SIDE for v in size)
    ):
        raise ValueError(f"size must be (width, height) with sides in [{MIN_SIDE}, {MAX_SIDE}], got {size!r}")


def _render(
    seed: int, label: str, split: str, size: tuple[int, int] | None, twin: bool, photos: PhotoSet | None
) -> tuple[SynthPhoto, SynthPhoto | None]:
    _check_args(seed, label, split, size, photos)
    factors = draw_factors(factor_rng(seed, label, split), label, split)
    real = None
    if photos is not None:
        real = draw_photo_factors(photo_rng(seed, label, split), factors, photos.for_split(split), split)
    if size is not None:
        factors["width"], factors["height"] = int(size[0]), int(size[1])
    dims = (factors["width"], factors["height"])
    picture = None if real is None else pixels(real.path)
    if picture is not None and factors["photo_use"] == "crop":
        rng = render_rng(seed, label, split, 0)
        return _photo(scene.develop(crop_photo(rng, picture, dims), rng, factors), factors, None, None), None
    for attempt in range(MAX_ATTEMPTS):
        photos_out = _compose(render_rng(seed, label, split, attempt), factors, dims, twin, picture)
        if photos_out is not None:
            return photos_out
    factors["occluder"] = "none"
    for attempt in range(MAX_ATTEMPTS, 4 * MAX_ATTEMPTS):
        photos_out = _compose(render_rng(seed, label, split, attempt), factors, dims, twin, picture)
        if photos_out is not None:
            return photos_out
    raise RuntimeError(f"could not lay out a usable photo for seed={seed} label={label} split={split}")


def render_photo(
    seed: int,
    label: str,
    *,
    split: str = "train",
    size: tuple[int, int] | None = None,
    photos: PhotoSet | None = None,
) -> SynthPhoto:
    """Render the synthetic ticket photo for ``seed``/``label``/``split`` (same arguments, same pixels).

    ``size`` is (width, height); by default a phone-like aspect with the long side in 448..640 px is drawn. With
    ``photos`` (``model.synth.real_photos``), a share of photos use a real photograph (``model.synth.real_scenes``);
    the ``real`` split needs them and uses only the held-out ones.
    """
    return _render(seed, label, split, size, False, photos)[0]


def render_twins(
    seed: int, *, split: str = "train", size: tuple[int, int] | None = None, photos: PhotoSet | None = None
) -> tuple[SynthPhoto, SynthPhoto]:
    """The ``screen_damage`` photo of ``render_photo(seed, "screen_damage", ...)`` and its intact twin, a
    ``general_returns`` photo of the same device, screen, scene, occluder, light, blur and noise, without the
    fracture: a pair that differs only in the crack (the twin's factors carry ``"twin": True``).
    """
    damaged, intact = _render(seed, DAMAGE, split, size, True, photos)
    if intact is None:  # cannot happen: every screen_damage photo shows a device
        raise RuntimeError(f"no intact twin for seed={seed} split={split}")
    return damaged, intact
