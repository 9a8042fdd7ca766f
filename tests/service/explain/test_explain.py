"""Explanations computed in-process: the ONNX weight reader, receptive-field boxes against the analytic ones on odd
photo sizes and every EXIF orientation, the exact class-activation map, effective receptive fields, option
validation, the pictures, and ``triage explain``."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.config import NetworkConfig
from model.preprocess import letterbox_geometry
from model.receptive_field import cell_field_in_photo, stage_fields
from model.synth import render_photo
from model.synth.photo import ORIENTATION_TAG, sensor_pixels
from service.explain import pictures as img
from service.explain.explainer import Explainer
from service.explain.options import ExplainOptions, OptionError, parse_options
from service.inference.engine import TriageEngine
from service.inference.intake import IntakeLimits, read_photo
from triage_cli.explain_file import explain_file

CONFIG = NetworkConfig()  # the architecture the fixture model and the shipped one are built from
STAGES = CONFIG.stage_names
LAST = STAGES[-1]
CELLS = sum(h * w for h, w in (f.out_size for f in stage_fields(CONFIG).values()))
ODD_SIZES = ((333, 517), (641, 257), (999, 101), (257, 257), (1001, 777))


@pytest.fixture(scope="module")
def model(random_model_dir: Path) -> tuple[TriageEngine, Explainer]:
    onnx_path = random_model_dir / "triage.onnx"
    return TriageEngine(onnx_path, device="cpu"), Explainer.from_onnx(onnx_path)


def stored(upright: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    """The file a phone would write for ``upright``: sensor pixels plus the EXIF orientation tag."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    out = io.BytesIO()
    quality = {"quality": 90} if fmt == "JPEG" else {}
    sensor_pixels(upright, orientation).save(out, fmt, exif=exif.tobytes(), **quality)
    return out.getvalue()


def explain(model: tuple[TriageEngine, Explainer], data: bytes, **options: Any) -> dict[str, Any]:
    engine, explainer = model
    prepared, _ = read_photo(data, engine.preprocessing, IntakeLimits())
    outputs = engine.infer(prepared.tensor[None], engine.output_names)
    decision = engine.decide(outputs["logits"])[0]
    return explainer.explain(prepared, {k: v[0] for k, v in outputs.items()}, decision, ExplainOptions(**options))


def analytic_box(stage: str, y: int, x: int, width: int, height: int) -> list[int]:
    config = NetworkConfig()
    geo = letterbox_geometry(width, height, config.preprocessing.size)
    c = cell_field_in_photo(config, stage, y, x, geo).clipped
    return [c.x0, c.y0, c.x1, c.y1]


def assert_boxes_are_analytic(result: dict[str, Any], width: int, height: int) -> int:
    """Every box of the explanation equals ``cell_field_in_photo`` for the upright ``width x height`` photo."""
    checked = 0
    assert (result["photo"]["width"], result["photo"]["height"]) == (width, height)
    for layer in result["layers"]:
        name = layer["name"]
        _, h, w = layer["shape"]
        xs, ys = layer["cell_boxes"]["x"], layer["cell_boxes"]["y"]
        assert (len(xs), len(ys)) == (w, h)
        for y in range(h):
            for x in range(w):
                assert [xs[x][0], ys[y][0], xs[x][1], ys[y][1]] == analytic_box(name, y, x, width, height)
                checked += 1
        assert layer["argmax"]["box"] == analytic_box(name, *layer["argmax"]["cell"], width, height)
        for channel in layer["channels"]:
            assert channel["box"] == analytic_box(name, *channel["argmax"], width, height)
    peak = result["cam"]["peak"]
    assert peak["box"] == analytic_box(result["cam"]["layer"], *peak["cell"], width, height)
    return checked


def _sees(result: dict[str, Any], stage: str, y: int, x: int) -> bool:
    """Whether the cell's box in the photo (computed independently, ``cell_field_in_photo``) holds a pixel."""
    x0, y0, x1, y1 = analytic_box(stage, y, x, result["photo"]["width"], result["photo"]["height"])
    return x1 > x0 and y1 > y0


def test_peaks_are_among_the_cells_that_see_the_photo(kit: Any) -> None:
    """On a thin strip most cells lie in the letterbox padding: they answer the pad colour, the same for every
    photo, and their boxes are empty. Channel peaks, the layer's argmax and the CAM peak come from the others.
    (The shipped model: with it, 13 of the strip's top-8 channels per stage peaked in the padding.)"""
    shipped = Path(__file__).resolve().parents[3] / "artifacts" / "triage.onnx"
    model = TriageEngine(shipped, device="cpu"), Explainer.from_onnx(shipped)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 1500, 3), dtype=np.uint8)
    result = explain(model, kit.encode(Image.fromarray(pixels), "PNG"), channels=8, maps="array")
    for layer in result["layers"]:
        name = layer["name"]
        maps = [np.array(channel["values"]) for channel in layer["channels"]]
        for channel, values in zip(layer["channels"], maps, strict=True):
            y, x = channel["argmax"]
            box = channel["box"]
            assert box[2] > box[0] and box[3] > box[1], (name, channel["index"], box)
            seeing = [values[c] for c in np.ndindex(values.shape) if _sees(result, name, *c)]
            assert channel["max"] == pytest.approx(values[y, x], abs=1e-5) == pytest.approx(max(seeing), abs=1e-5)
        top = layer["argmax"]
        assert top["box"][2] > top["box"][0] and top["box"][3] > top["box"][1]
        assert top["value"] == max(channel["max"] for channel in layer["channels"])
    peak = result["cam"]["peak"]["box"]
    assert peak[2] > peak[0] and peak[3] > peak[1]


@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_boxes_equal_the_analytic_boxes_on_odd_sizes(
    model: tuple[TriageEngine, Explainer], kit: Any, size: tuple[int, int]
) -> None:
    upright = kit.scene(*size, seed=size[0])
    for fmt in ("PNG", "JPEG"):  # JPEG is decoded at a reduced DCT scale; the boxes must not notice
        result = explain(model, stored(upright, 1, fmt), channels=3)
        assert assert_boxes_are_analytic(result, *size) == CELLS


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_equal_the_analytic_boxes_under_every_exif_orientation(
    model: tuple[TriageEngine, Explainer], kit: Any, orientation: int
) -> None:
    width, height = 517, 333
    upright = kit.scene(width, height, seed=orientation)
    result = explain(model, stored(upright, orientation, "JPEG"), channels=2)
    assert result["photo"]["orientation"] == orientation
    assert_boxes_are_analytic(result, width, height)
    reference = explain(model, stored(upright, 1, "JPEG"), channels=2)  # same upright photo, no rotation
    for got, want in zip(result["layers"], reference["layers"], strict=True):
        assert got["cell_boxes"] == want["cell_boxes"]


def test_layer_statistics_and_channel_order(model: tuple[TriageEngine, Explainer], kit: Any) -> None:
    engine, _ = model
    data = kit.encode(kit.scene(300, 200), "PNG")
    result = explain(model, data, channels=4, maps="array")
    prepared, _ = read_photo(data, engine.preprocessing, IntakeLimits())
    maps = engine.infer(prepared.tensor[None], engine.output_names)
    assert [layer["name"] for layer in result["layers"]] == list(STAGES)
    for layer in result["layers"]:
        m = maps[layer["name"]][0]
        assert layer["shape"] == list(m.shape)
        peaks = [c["max"] for c in layer["channels"]]
        assert peaks == sorted(peaks, reverse=True) and len(peaks) == 4
        assert peaks[0] == pytest.approx(float(m.max()))
        for c in layer["channels"]:
            channel = m[c["index"]]
            assert c["mean"] == pytest.approx(float(channel.mean()), rel=1e-5, abs=1e-7)
            assert c["fraction_active"] == pytest.approx(float((channel > 0).mean()))
            assert channel[tuple(c["argmax"])] == pytest.approx(c["max"])
            np.testing.assert_allclose(np.array(c["values"]), channel, atol=1e-5)
            assert "png" not in c
        assert layer["argmax"]["channel"] == layer["channels"][0]["index"]
        field = stage_fields(NetworkConfig())[layer["name"]]
        assert layer["receptive_field"] == {
            "size": field.size,
            "jump": field.jump,
            "start": field.start,
            "first_edge": field.first_edge,
        }


def test_cam_is_exact_and_peaks_where_reported(model: tuple[TriageEngine, Explainer], kit: Any) -> None:
    result = explain(model, kit.encode(kit.scene(400, 300, seed=3), "JPEG"))
    cam = result["cam"]
    values = np.array(cam["values"])
    last = stage_fields(CONFIG)[LAST]
    assert cam["class"] in ("screen_damage", "general_returns") and cam["layer"] == LAST
    assert cam["shape"] == list(last.out_size) and values.shape == last.out_size
    assert cam["pool"] == "avg" and cam["sum_plus_bias"] == pytest.approx(cam["logit"], abs=1e-4)
    py, px = cam["peak"]["cell"]
    seeing = [(y, x) for y in range(values.shape[0]) for x in range(values.shape[1]) if _sees(result, LAST, y, x)]
    assert (py, px) in seeing and values[py, px] == max(values[c] for c in seeing)
    overlay = Image.open(io.BytesIO(base64.b64decode(cam["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (result["display"]["width"], result["display"]["height"])
    assert overlay.size == (400, 300)  # small photos keep their size
    probabilities = result["probabilities"]
    assert cam["class"] == max(probabilities, key=probabilities.get)


def test_the_overlay_is_full_colour_on_a_real_explanation() -> None:
    """The shipped model on a damaged-screen photo: the overlay is an RGB PNG with the photo's and the heatmap's
    gradients intact (a 256-colour palette drew them as bands)."""
    shipped = Path(__file__).resolve().parents[3] / "artifacts" / "triage.onnx"
    model = TriageEngine(shipped, device="cpu"), Explainer.from_onnx(shipped)
    data = render_photo(11, "screen_damage", split="test").encode("JPEG")
    result = explain(model, data, layers=(LAST,), channels=1)
    overlay = Image.open(io.BytesIO(base64.b64decode(result["cam"]["overlay_png"])))
    assert overlay.mode in ("RGB", "RGBA")
    pixels = np.asarray(overlay.convert("RGB")).reshape(-1, 3)
    distinct = len(np.unique(pixels, axis=0))
    assert distinct > 256, distinct


def test_effective_receptive_field_stays_in_the_box_and_gathers_at_its_centre(
    model: tuple[TriageEngine, Explainer], kit: Any
) -> None:
    result = explain(model, kit.encode(kit.scene(320, 320, seed=5), "PNG"), erf=True, channels=1)
    assert result["erf_check"]["numpy_onnx_max_abs_diff"] < 1e-4
    for layer in result["layers"]:
        erf = layer["erf"]
        assert erf["cell"] == layer["argmax"]["cell"] and erf["channel"] == layer["argmax"]["channel"]
        assert erf["mass_in_box"] == pytest.approx(1.0, abs=1e-9), layer["name"]  # a gradient cannot leave the box
        assert erf["radius90"] <= erf["box_half_side"]
        if layer["name"] != STAGES[0]:  # (the first stage's tiny field is one conv window picked by a max-pool)
            # the centre (about a quarter of the box's pixels) holds more than its share of the influence
            assert erf["mass_in_centre"] > erf["centre_area"] > 0.2, layer["name"]
        side = stage_fields(CONFIG)[layer["name"]].size  # the picture is the theoretical box, cell for pixel
        picture = Image.open(io.BytesIO(base64.b64decode(erf["png"])))
        assert picture.size == (side * img.upscale_factor(side, side),) * 2
        assert erf["box"] == layer["argmax"]["box"]


def test_layer_selection(model: tuple[TriageEngine, Explainer], kit: Any) -> None:
    chosen = (STAGES[3], STAGES[1])
    result = explain(model, kit.encode(kit.scene(), "PNG"), layers=chosen, channels=200)
    assert tuple(layer["name"] for layer in result["layers"]) == chosen
    channels = {s.name: s.channels for s in CONFIG.stages}
    assert [len(layer["channels"]) for layer in result["layers"]] == [channels[n] for n in chosen]  # all of them
    with pytest.raises(OptionError, match=f"valid layers are {', '.join(STAGES)}$"):
        explain(model, kit.encode(kit.scene(), "PNG"), layers=("stage9",))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"layers": "stage1,conv7"}, "unknown layer.*'conv7'.*valid layers are stage1, stage2"),
        ({"layers": ""}, "layers is empty"),
        ({"layers": "stage1,,stage2"}, "empty name"),
        ({"channels": "0"}, "channels must be a whole number from 1"),
        ({"channels": "three"}, "channels must be"),
        ({"channels": "-2"}, "channels must be"),
        ({"channels": "²"}, "channels must be"),  # a digit to str.isdigit, not to int()
        ({"channels": "١٢"}, "channels must be"),
        ({"maps": "json"}, "maps must be one of png, array, both"),
        ({"format": "xml"}, r"format \(deprecated: use maps=png\|array\|both\) must be png or json"),
        ({"format": "json", "maps": "array"}, "not both"),
        ({"erf": "maybe"}, "erf must be true or false"),
    ],
)
def test_bad_options_are_rejected_with_what_is_valid(query: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message) as caught:
        parse_options(query, STAGES)
    assert caught.value.status == 400


def test_options_are_parsed() -> None:
    assert parse_options({}) == ExplainOptions() == ExplainOptions(maps="png")
    got = parse_options({"layers": " stage3 ,stage1,stage3", "channels": "9", "maps": "Both", "erf": "1"}, STAGES)
    assert got == ExplainOptions(("stage3", "stage1"), 9, "both", True)
    assert got.pictures and got.arrays


@pytest.mark.parametrize(("old", "new"), [("png", "png"), ("JSON", "array")])
def test_the_deprecated_format_option_still_means_what_it_did(old: str, new: str) -> None:
    assert parse_options({"format": old}) == parse_options({"maps": new}) == ExplainOptions(maps=new)


def test_feature_map_pictures_are_nearest_neighbour_upscaled() -> None:
    channel = np.arange(16 * 16, dtype=np.float32).reshape(16, 16) - 40.0  # some cells negative -> 0
    picture = np.asarray(img.feature_map_image(channel).convert("RGB"))
    f = img.upscale_factor(16, 16)
    assert f == 8 and picture.shape == (128, 128, 3)
    blocks = picture.reshape(16, f, 16, f, 3)
    assert (blocks == blocks[:, :1, :, :1]).all(), "every cell is one flat square"
    np.testing.assert_array_equal(blocks[0, 0, 0, 0], img.VIRIDIS[0])
    np.testing.assert_array_equal(blocks[15, 0, 15, 0], img.VIRIDIS[255])
    assert img.upscale_factor(64, 64) == 2


def test_grid_values_land_on_their_cell_centres() -> None:
    geo = letterbox_geometry(256, 256, 256)
    grid = np.random.default_rng(1).random((16, 16))
    photo = img.grid_to_photo(grid, 7.5, 16, geo, (256, 256))
    # pixel 7 of the photo is centred at input 7.5: cell 0's centre; pixel 23 is cell 1's
    np.testing.assert_allclose(photo[7::16, 7::16], grid, atol=1e-6)
    np.testing.assert_allclose(photo[7, 15], (grid[0, 0] + grid[0, 1]) / 2, atol=1e-6)


@pytest.mark.parametrize("width, height", [(400, 100), (90, 300)])
def test_a_hot_cell_lands_on_its_place_in_a_letterboxed_photo(width: int, height: int) -> None:
    """A single hot cell, resampled onto a photo with letterbox padding, peaks at that cell's centre mapped to the
    photo independently: input coordinate ``start + i * jump``, less the padding, times photo side / resized side."""
    geo = letterbox_geometry(width, height, 256)
    start, jump = 7.5, 16
    for cy, cx in [(6, 4), (9, 12)]:
        grid = np.zeros((16, 16))
        grid[cy, cx] = 1.0
        heat = img.grid_to_photo(grid, start, jump, geo, (width, height))
        px = (start + cx * jump - geo.pad_x) * width / geo.new_width
        py = (start + cy * jump - geo.pad_y) * height / geo.new_height
        if 0 <= px < width and 0 <= py < height:
            y, x = np.unravel_index(heat.argmax(), heat.shape)
            assert abs(x + 0.5 - px) <= 1.0 and abs(y + 0.5 - py) <= 1.0, ((y, x), (py, px))


def test_the_overlay_draws_the_heat_where_it_is() -> None:
    """Heat in the top-left quarter of a black photo colours that quarter only (not its mirror image)."""
    heat = np.zeros((60, 80))
    heat[:30, :40] = 1.0
    drawn = np.asarray(img.overlay(Image.new("RGB", (80, 60)), heat)).astype(int).sum(axis=2)
    assert drawn[:30, :40].min() > 0 and drawn[30:, :].max() == 0 and drawn[:, 40:].max() == 0


@pytest.mark.parametrize("width, height", [(512, 200), (180, 460)])
def test_the_cam_overlay_is_hot_where_the_peak_cell_sits_in_the_photo(
    model: tuple[TriageEngine, Explainer], width: int, height: int
) -> None:
    """Last-stage maps that are zero but at one cell: the class-activation map, hence the overlay on a black photo,
    is hot around that cell only. Its centre is mapped to the photo independently (input coordinate
    ``start + i * jump``, less the letterbox padding, times photo side / resized side)."""
    engine, explainer = model
    prepared, _ = read_photo(stored(Image.new("RGB", (width, height)), 1), engine.preprocessing, IntakeLimits())
    geo, field = prepared.geometry, explainer.fields[explainer.cam_stage]
    # an off-centre cell: the one whose centre is nearest to a quarter of the way into the photo on each axis
    cell = tuple(
        int(np.argmin(np.abs(field.start + np.arange(n) * field.jump - (pad + new / 4))))
        for n, pad, new in zip(field.out_size, (geo.pad_y, geo.pad_x), (geo.new_height, geo.new_width), strict=True)
    )
    outputs = {k: v[0] for k, v in engine.infer(prepared.tensor[None], engine.output_names).items()}
    outputs["logits"] = np.array([4.0, -4.0], np.float32)
    k = 0
    last = np.zeros_like(outputs[explainer.cam_stage])
    last[explainer.head_w[k] > 0, cell[0], cell[1]] = 10.0
    outputs[explainer.cam_stage] = last
    result = explainer.explain(prepared, outputs, engine.decide(outputs["logits"][None])[0], ExplainOptions())
    assert result["cam"]["peak"]["cell"] == list(cell)
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["cam"]["overlay_png"]))).convert("L"), float)
    dw, dh = result["display"]["width"], result["display"]["height"]
    cx = (field.start + cell[1] * field.jump - geo.pad_x) * width / geo.new_width * dw / width
    cy = (field.start + cell[0] * field.jump - geo.pad_y) * height / geo.new_height * dh / height
    ys, xs = np.nonzero(drawn >= drawn.max() - 1)
    tolerance = field.jump * max(width / geo.new_width, height / geo.new_height) * max(dw / width, dh / height) / 2
    assert abs(xs.mean() + 0.5 - cx) <= tolerance and abs(ys.mean() + 0.5 - cy) <= tolerance, (
        xs.mean(),
        ys.mean(),
        cx,
        cy,
    )


def test_explain_cli_writes_json_and_pictures(random_model_dir: Path, kit: Any, tmp_path: Path) -> None:
    photo = tmp_path / "ticket.png"
    photo.write_bytes(stored(kit.scene(289, 403), 6))  # stored 403x289, upright 289x403
    out = tmp_path / "out"
    assert explain_file(photo, out, model=random_model_dir / "triage.onnx") == 0
    result = json.loads((out / "explanation.json").read_text())
    assert result["file"] == str(photo) and result["photo"]["width"] == 289 and result["photo"]["height"] == 403
    assert Image.open(out / result["cam"]["overlay_file"]).size == (289, 403)
    for layer in result["layers"]:
        assert Image.open(out / layer["erf"]["file"]).format == "PNG"
        for channel in layer["channels"]:
            assert "png" not in channel and Image.open(out / channel["file"]).format == "PNG"
    assert_boxes_are_analytic(result, 289, 403)
    card = json.loads((random_model_dir / "model_card.json").read_text())
    assert result["model"]["name"] == card["name"] and result["model"]["version"] == card["version"]
    assert result["model"]["sha256"] == card["artifacts"]["triage.onnx"]["sha256"]
    assert result["device"] == "cpu" and result["provider"] == "CPUExecutionProvider"


def test_the_cli_finds_the_shipped_model_from_any_folder(tmp_path: Path) -> None:
    """The default model is the checkout's, not ``./artifacts`` wherever the command runs."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    photo = root / "samples" / "screen_damage" / "test_00000000.jpg"
    for command in (["predict", str(photo), "--json"], ["explain", str(photo), "--out", str(tmp_path / "x")]):
        done = subprocess.run(
            [sys.executable, "-m", "triage_cli", *command],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr


def test_explain_cli_reports_unreadable_files(random_model_dir: Path, tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    assert explain_file(bad, tmp_path / "out", model=random_model_dir / "triage.onnx") == 1
    assert "error 415" in capsys.readouterr().err
    assert explain_file(tmp_path / "missing.jpg", tmp_path / "out", model=random_model_dir / "triage.onnx") == 1
    assert not (tmp_path / "out" / "explanation.json").exists()


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_logit_contributions_add_up_to_the_pooled_logit_ties_included(pool: str) -> None:
    from service.explain.explainer import logit_contributions

    rng = np.random.default_rng(11)
    maps = rng.integers(0, 4, (5, 3, 4)).astype(np.float32)  # few values: maxima tie within maps
    weights = rng.standard_normal(5).astype(np.float32)
    wide = maps.astype(np.float64)
    pooled = wide.max(axis=(1, 2)) if pool == "max" else wide.mean(axis=(1, 2))
    cam = logit_contributions(weights, maps, pool)
    assert cam.shape == (3, 4) and cam.dtype == np.float64
    assert cam.sum() == pytest.approx(float(weights.astype(np.float64) @ pooled), abs=1e-9)
    if pool == "max":  # only cells holding some channel's maximum contribute
        holds_a_max = (maps == maps.max(axis=(1, 2), keepdims=True)).any(axis=0)
        assert np.all(cam[~holds_a_max] == 0)
    with pytest.raises(ValueError, match="pool"):
        logit_contributions(weights, maps, "median")
