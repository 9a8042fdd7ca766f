"""The inputs ``triage parity`` runs every engine on: rendered ticket photos through the shared preprocessing, and
tensors chosen to stress the arithmetic (noise, extremes, checkerboards, stripes, ramps)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from model.config import Preprocessing
from model.preprocess import normalize, prepare

BEYOND_PHOTOS = ("binary-noise", "gaussian-3x")
# One of each kind: pixel noise, the unit Gaussian, both ends of the normalised range, the finest checkerboard, one
# that lines up with no stride, a ramp and saturated colours.
COMPACT_STRESS: tuple[str, ...] = (
    "noise-pixels-0",
    "gaussian-1x",
    "black",
    "white",
    "checker-1",
    "checker-7",
    "ramp",
    "red-blue",
)


def _pixels(spec: Preprocessing, fill: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """A normalised ``(3, S, S)`` tensor from a ``uint8 (S, S, 3)`` image ``fill(yy, xx)`` builds."""
    yy, xx = np.mgrid[0 : spec.size, 0 : spec.size]
    return normalize(np.ascontiguousarray(fill(yy, xx)).astype(np.uint8), spec)


def _gray(value: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(value, dtype=np.uint8)[..., None], 3, axis=-1)


def _synthetic_photos(spec: Preprocessing, count: int, seed: int) -> dict[str, np.ndarray]:
    """Rendered ticket photos through the shared eval preprocessing, when ``model.synth.render_photo`` exists."""
    try:
        render = getattr(importlib.import_module("model.synth"), "render_photo", None)
    except ModuleNotFoundError as err:
        if err.name != "model.synth":
            raise
        return {}
    if render is None:
        return {}
    photos = {}
    for i in range(count):
        label = spec.classes[i % len(spec.classes)]
        photo = render(seed + i, label, split="test")
        photos[f"synth-{i}-{label}"] = prepare(photo.encode(), spec).tensor
    return photos


def default_inputs(
    spec: Preprocessing,
    seed: int = 0,
    synth: int = 8,
    beyond_photos: bool = False,
    stress: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Named ``(3, S, S)`` float32 inputs: ``synth`` rendered photos (when available) and 16 stress tensors (only
    those named in ``stress`` when given; ``COMPACT_STRESS`` is the set for networks the reference evaluator runs
    slowly).

    ``beyond_photos`` adds two inputs with larger activations than photos give: 0/255 binary noise and a 3x
    Gaussian (outside the normalised pixel range). On a trained network a few of their millions of fp32
    elements differ between engines by ~3e-5 on values ~3, just over the 1e-5 rule: summation order at that
    magnitude, not a defect. They are reported with ``--beyond-photos`` and kept out of the default (CI) set.

    The stress set: uniform-noise pixels, a unit Gaussian tensor, an all-zero tensor, the pad colour,
    black, mid-grey and white images (the normalised range's extremes and centre), checkerboards of period 1, 8
    and 7 pixels (7 lines up with no stride or pool), stripes, a ramp and saturated colour halves.
    """
    rng = np.random.default_rng(seed)
    s = spec.size
    pad = np.asarray(spec.pad_colour, dtype=np.uint8)
    inputs = _synthetic_photos(spec, synth, 7_000_000 + seed) if synth else {}
    for i in range(3):
        inputs[f"noise-pixels-{i}"] = normalize(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), spec)
    inputs["gaussian-1x"] = rng.standard_normal((3, s, s)).astype(np.float32)
    if beyond_photos:
        binary_noise, gaussian_3x = BEYOND_PHOTOS
        inputs[binary_noise] = normalize((rng.integers(0, 2, (s, s, 3)) * 255).astype(np.uint8), spec)
        inputs[gaussian_3x] = (3 * rng.standard_normal((3, s, s))).astype(np.float32)
    inputs["zeros"] = np.zeros((3, s, s), np.float32)
    inputs["pad-colour"] = _pixels(spec, lambda yy, xx: np.broadcast_to(pad, (s, s, 3)))
    inputs["black"] = _pixels(spec, lambda yy, xx: _gray(np.zeros_like(yy)))
    inputs["white"] = _pixels(spec, lambda yy, xx: _gray(np.full_like(yy, 255)))
    inputs["mid-grey"] = _pixels(spec, lambda yy, xx: _gray(np.full_like(yy, 128)))
    for period in (1, 8, 7):
        inputs[f"checker-{period}"] = _pixels(spec, lambda yy, xx, p=period: _gray(((yy // p + xx // p) % 2) * 255))
    inputs["stripes-h"] = _pixels(spec, lambda yy, xx: _gray((yy % 2) * 255))
    inputs["stripes-v"] = _pixels(spec, lambda yy, xx: _gray((xx % 4 < 2) * 255))
    inputs["ramp"] = _pixels(spec, lambda yy, xx: _gray(xx * 255 // max(s - 1, 1)))
    red, blue = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)
    inputs["red-blue"] = _pixels(spec, lambda yy, xx: np.where((xx < s // 2)[..., None], red, blue))
    if stress is None:
        return inputs
    unknown = set(stress) - set(inputs)
    if unknown:
        raise ValueError(f"unknown stress inputs {sorted(unknown)}; there are {list(inputs)}")
    keep = {*stress, *BEYOND_PHOTOS}
    return {name: t for name, t in inputs.items() if name.startswith("synth-") or name in keep}
