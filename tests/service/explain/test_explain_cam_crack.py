"""Does the shipped model's class-activation map point at the crack? On generated damaged-screen photos the
generator knows every crack pixel (``SynthPhoto.crack_mask``, upright photo coordinates). The photos are uploaded
as a phone stores them (EXIF orientation, JPEG), so the cells go through the same orientation and letterbox mapping
as a real request. The CAM peak cell's own footprint (the ``jump x jump`` square around its centre, in
uploaded-photo pixels) must touch the crack in at least 70% of them, and in more than four times the share of
cells whose footprint touches it (what a cell drawn at random scores).

Reported, not asserted (``-s`` shows them): how often the peak cell's whole receptive-field box overlaps the crack,
and how often any cell's box does: a last-stage box covers most of the photo, so nearly every box touches the crack
(about 97%) and the box says little on its own; how many photos the model calls ``screen_damage`` (argmax) and
routes there (above the review threshold).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.synth import render_photo
from service.explain.explainer import Explainer
from service.explain.options import ExplainOptions
from service.inference.engine import TriageEngine
from service.inference.intake import IntakeLimits, read_photo

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = Path(os.environ.get("TRIAGE_CAM_TEST_MODEL", ROOT / "artifacts" / "triage.onnx"))  # another model: set it
PHOTOS = 60
REQUIRED_CELL = 0.7  # the shipped model: 83.3%, as the six-stage one before it; without crack locations: 61.7%


def touches(mask: np.ndarray, box: list[int] | tuple[int, ...]) -> bool:
    x0, y0, x1, y1 = (int(v) for v in box)
    return bool(mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].any())


def footprint(y: int, x: int, layer: dict[str, Any], result: dict[str, Any]) -> tuple[int, ...]:
    """The photo pixels of cell ``(y, x)``'s own ``jump x jump`` square (around its centre), rounded outward."""
    rf = layer["receptive_field"]
    lb, photo = result["letterbox"], result["photo"]
    sx, sy = photo["width"] / lb["new_width"], photo["height"] / lb["new_height"]
    cx, cy = rf["start"] + x * rf["jump"], rf["start"] + y * rf["jump"]
    half = rf["jump"] / 2
    return (
        int(np.floor((cx - half - lb["pad_x"]) * sx)),
        int(np.floor((cy - half - lb["pad_y"]) * sy)),
        int(np.ceil((cx + half - lb["pad_x"]) * sx)),
        int(np.ceil((cy + half - lb["pad_y"]) * sy)),
    )


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.exists(), reason=f"no trained model at {SHIPPED} (triage train && triage export)")
def test_cam_peak_cell_is_on_the_crack(record_property: Any) -> None:
    engine = TriageEngine(SHIPPED, device="cpu")
    explainer = Explainer.from_onnx(SHIPPED)
    last = explainer.cam_stage
    options = ExplainOptions(layers=(last,), channels=1, maps="array")
    box_hits = cell_hits = damage_routes = damage_argmax = 0
    chance = box_chance = 0.0
    for seed in range(PHOTOS):
        synth = render_photo(seed, "screen_damage", split="test")
        assert synth.crack_mask is not None and synth.crack_mask.any()
        prepared, _ = read_photo(synth.encode("JPEG"), engine.preprocessing, IntakeLimits())
        outputs = engine.infer(prepared.tensor[None], engine.output_names)
        decision = engine.decide(outputs["logits"])[0]
        result = explainer.explain(prepared, {k: v[0] for k, v in outputs.items()}, decision, options)
        assert (result["photo"]["width"], result["photo"]["height"]) == synth.image.size
        cam = result["cam"]
        damage_routes += result["route"] == "screen_damage"
        damage_argmax += cam["class"] == "screen_damage"
        box_hits += touches(synth.crack_mask, cam["peak"]["box"])
        layer = result["layers"][0]
        cell_hits += touches(synth.crack_mask, footprint(*cam["peak"]["cell"], layer, result))
        _, h, w = layer["shape"]
        cells = [footprint(y, x, layer, result) for y in range(h) for x in range(w)]
        chance += np.mean([touches(synth.crack_mask, cell) for cell in cells])
        xs, ys = layer["cell_boxes"]["x"], layer["cell_boxes"]["y"]
        boxes = [(xs[x][0], ys[y][0], xs[x][1], ys[y][1]) for y in range(h) for x in range(w)]
        box_chance += np.mean([touches(synth.crack_mask, box) for box in boxes])
    figures = {
        "photos": PHOTOS,
        "peak_box_overlaps_crack": box_hits / PHOTOS,
        "any_cell_box_overlaps_crack": float(box_chance / PHOTOS),
        "peak_cell_footprint_touches_crack": cell_hits / PHOTOS,
        "any_cell_footprint_touches_crack": float(chance / PHOTOS),
        "called_screen_damage": damage_argmax / PHOTOS,
        "routed_screen_damage": damage_routes / PHOTOS,
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\nCAM peak vs crack on {PHOTOS} generated damaged-screen photos: {figures}")
    assert cell_hits / PHOTOS >= max(REQUIRED_CELL, 4 * figures["any_cell_footprint_touches_crack"]), figures
