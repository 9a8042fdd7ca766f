"""``POST /v1/explain`` and the page at ``GET /`` in-process (LitServe's test harness, real inference workers):
answers, boxes against the analytic ones under every EXIF orientation, option and photo errors, the API key,
per-request error isolation under batching, and the page's assets."""

from __future__ import annotations

import base64
import io
import math
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from litserve.utils import wrap_litserve_start
from PIL import Image

from model.config import CLASSES, NEEDS_REVIEW, NetworkConfig
from model.preprocess import letterbox_geometry
from model.receptive_field import cell_field_in_photo, stage_fields
from model.synth.photo import ORIENTATION_TAG, sensor_pixels
from service.explain import pictures as img
from service.explain.options import DEFAULT_CHANNELS
from service.server import build_server, preflight
from service.settings import Settings

KEY = "explain-test-key"
STAGES = list(NetworkConfig().stage_names)
LAST = STAGES[-1]


@pytest.fixture(scope="module")
def client(random_model_dir: Path, metrics_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_path=random_model_dir / "triage.onnx",
        api_key=KEY,
        device="cpu",
        max_images=3,
        max_bytes=300_000,
        max_pixels=3_000_000,
        max_batch_size=4,
        batch_timeout=0.2,
        request_timeout=60.0,
    )
    yield from started_client(settings)


def started_client(settings: Settings) -> Iterator[TestClient]:
    """The in-process server for ``settings``, once its inference workers are ready; stopped when closed."""
    server = build_server(settings, *preflight(settings))
    with wrap_litserve_start(server) as started, TestClient(started.app) as test_client:
        deadline = time.monotonic() + 180  # spawning and loading the workers: seconds, more on a loaded machine
        while test_client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the inference workers did not become ready"
            time.sleep(0.1)
        yield test_client


def post(
    client: TestClient, *photos: bytes, key: str | None = KEY, path: str = "/v1/explain", **params: str
) -> httpx.Response:
    files = [("file", (f"photo{i}.jpg", data, "application/octet-stream")) for i, data in enumerate(photos)]
    return client.post(path, files=files, params=params, headers={"X-API-Key": key} if key else {})


def oriented(kit: Any, width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    out = io.BytesIO()
    sensor_pixels(kit.scene(width, height, seed=orientation), orientation).save(
        out, "JPEG", quality=90, exif=exif.tobytes()
    )
    return out.getvalue()


def analytic(stage: str, cell: list[int], width: int, height: int) -> list[int]:
    config = NetworkConfig()
    geo = letterbox_geometry(width, height, config.preprocessing.size)
    c = cell_field_in_photo(config, stage, cell[0], cell[1], geo).clipped
    return [c.x0, c.y0, c.x1, c.y1]


def analytic_footprint(stage: str, cell: list[int], width: int, height: int) -> list[int]:
    """The cell's own square: ``jump`` input pixels centred on its centre ``start + i * jump``, through the letterbox
    (photo = (input - pad) * photo side / resized side), rounded outward and clipped to the photo."""
    config = NetworkConfig()
    field = stage_fields(config)[stage]
    geo = letterbox_geometry(width, height, config.preprocessing.size)
    edges = []
    for i, pad, side, resized in (
        (cell[1], geo.pad_x, width, geo.new_width),
        (cell[0], geo.pad_y, height, geo.new_height),
    ):
        centre = field.start + i * field.jump
        lo, hi = ((centre + d * field.jump / 2 - pad) * side / resized for d in (-1, 1))
        edges.append((min(max(math.floor(lo), 0), side), min(max(math.ceil(hi), 0), side)))
    (x0, x1), (y0, y1) = edges
    return [x0, y0, x1, y1]


def test_the_peak_cells_footprint_is_one_cell_inside_its_receptive_field(client: TestClient, kit: Any) -> None:
    width, height = 256, 256  # the network input's size: photo pixels are input pixels
    r = post(client, kit.encode(kit.scene(width, height, seed=5), "PNG"), channels="1")
    assert r.status_code == 200, r.text
    body = r.json()
    fields = stage_fields(NetworkConfig())
    cells = [(body["cam"]["layer"], body["cam"]["peak"])] + [
        (layer["name"], layer["argmax"]) for layer in body["layers"]
    ]
    for stage, cell in cells:
        x0, y0, x1, y1 = cell["footprint"]
        b = cell["box"]
        assert b[0] <= x0 < x1 <= b[2] and b[1] <= y0 < y1 <= b[3], (stage, cell)
        jump = fields[stage].jump
        assert jump <= x1 - x0 <= jump + 1 and jump <= y1 - y0 <= jump + 1, (stage, cell["footprint"])
    peak = body["cam"]["peak"]
    assert (peak["box"][2] - peak["box"][0]) * (peak["box"][3] - peak["box"][1]) > 0.5 * width * height
    assert peak["footprint"] == analytic_footprint(LAST, peak["cell"], width, height)


def test_explains_a_photo(client: TestClient, kit: Any) -> None:
    data = kit.encode(kit.scene(321, 243), "JPEG", quality=90)
    r = post(client, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["route"] in {*CLASSES, NEEDS_REVIEW} and set(body["probabilities"]) == set(CLASSES)
    assert body["file"] == "photo0.jpg" and body["request_id"] == r.headers["x-request-id"]
    assert body["model"]["name"] == "random-test-model" and body["provider"] == "CPUExecutionProvider"
    assert [layer["name"] for layer in body["layers"]] == STAGES
    for layer in body["layers"]:
        assert len(layer["channels"]) == DEFAULT_CHANNELS
        for channel in layer["channels"]:
            picture = Image.open(io.BytesIO(base64.b64decode(channel["png"])))
            assert picture.size == (layer["shape"][2] * layer["upscale"], layer["shape"][1] * layer["upscale"])
    overlay = Image.open(io.BytesIO(base64.b64decode(body["cam"]["overlay_png"])))
    assert overlay.size == (321, 243)
    assert {"queue", "decode", "preprocess", "inference", "explain"} <= set(body["timings_ms"])
    routed = post(client, data, path="/v1/route").json()
    assert routed["probabilities"] == body["probabilities"], "explain and route serve the same model"
    card = client.get("/v1/model", headers={"X-API-Key": KEY}).json()
    assert body["review_threshold"] == card["calibration"]["review_threshold"]
    assert (body["route"] == NEEDS_REVIEW) == (body["confidence"] < body["review_threshold"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_are_in_upright_photo_pixels(client: TestClient, kit: Any, orientation: int) -> None:
    width, height = 411, 263  # odd sizes; the stored file is rotated for orientations 5..8
    r = post(client, oriented(kit, width, height, orientation), channels="2")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["photo"]["width"], body["photo"]["height"], body["photo"]["orientation"]) == (
        width,
        height,
        orientation,
    )
    for layer in body["layers"]:
        assert layer["argmax"]["box"] == analytic(layer["name"], layer["argmax"]["cell"], width, height)
        for channel in layer["channels"]:
            assert channel["box"] == analytic(layer["name"], channel["argmax"], width, height)
        ys, xs = layer["cell_boxes"]["y"], layer["cell_boxes"]["x"]
        for y in range(len(ys)):
            x = (y * 7) % len(xs)
            assert [xs[x][0], ys[y][0], xs[x][1], ys[y][1]] == analytic(layer["name"], [y, x], width, height)
    assert body["cam"]["peak"]["box"] == analytic(LAST, body["cam"]["peak"]["cell"], width, height)
    assert body["cam"]["peak"]["footprint"] == analytic_footprint(LAST, body["cam"]["peak"]["cell"], width, height)
    for layer in body["layers"]:
        assert layer["argmax"]["footprint"] == analytic_footprint(layer["name"], layer["argmax"]["cell"], width, height)


@pytest.mark.parametrize("query", [{"maps": "array"}, {"format": "json"}], ids=["maps=array", "deprecated format=json"])
def test_maps_as_arrays_and_layer_selection(client: TestClient, kit: Any, query: dict[str, str]) -> None:
    r = post(client, kit.encode(kit.scene(200, 150), "PNG"), layers=f"{LAST},stage3", channels="3", **query)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [layer["name"] for layer in body["layers"]] == [LAST, "stage3"]
    for layer in body["layers"]:
        for channel in layer["channels"]:
            assert "png" not in channel
            assert len(channel["values"]) == layer["shape"][1] and len(channel["values"][0]) == layer["shape"][2]
    assert "overlay_png" not in body["cam"] and len(body["cam"]["values"]) == body["cam"]["shape"][0]


def test_maps_both_gives_pictures_and_arrays_of_the_same_map(client: TestClient, kit: Any) -> None:
    r = post(client, kit.encode(kit.scene(200, 150), "PNG"), layers="stage3", channels="1", maps="both")
    assert r.status_code == 200, r.text
    body = r.json()
    channel = body["layers"][0]["channels"][0]
    values = np.array(channel["values"])
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(channel["png"]))).convert("RGB"))
    f = body["layers"][0]["upscale"]
    assert picture.shape[:2] == (values.shape[0] * f, values.shape[1] * f)
    # the picture's brightest cell (viridis' last colour) is the array's maximum
    y, x = np.unravel_index(values.argmax(), values.shape)
    assert tuple(picture[y * f, x * f]) == tuple(img.VIRIDIS[255])
    assert "overlay_png" in body["cam"]


def test_effective_receptive_field_on_request(client: TestClient, kit: Any) -> None:
    r = post(client, kit.encode(kit.scene(256, 256), "PNG"), layers="stage4", channels="1", erf="true")
    assert r.status_code == 200, r.text
    erf = r.json()["layers"][0]["erf"]
    assert erf["mass_in_box"] == pytest.approx(1.0) and erf["radius90"] <= erf["box_half_side"]
    assert r.json()["erf_check"]["numpy_onnx_max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        (
            {"layers": "stage2,pool9"},
            f"unknown layer\\(s\\) 'pool9'; valid layers are {', '.join(STAGES)}$",
        ),
        ({"layers": ""}, "layers is empty.*valid layers are stage1"),
        ({"channels": "0"}, "channels must be a whole number"),
        (
            {"channels": "9" * 5000},
            r"channels must be a whole number from 1 to 512, got '9{40}'\.\.\. \(5000 characters\)$",
        ),
        ({"layers": "x" * 900}, r"unknown layer\(s\) 'x{40}'\.\.\. \(900 characters\); valid layers"),
        ({"maps": "gif"}, "maps must be one of png, array, both, got 'gif'$"),
        ({"format": "gif"}, r"format \(deprecated: use maps=png\|array\|both\) must be png or json"),
        ({"erf": "perhaps"}, "erf must be true or false"),
    ],
)
def test_bad_options_are_400_with_the_valid_values(
    client: TestClient, kit: Any, params: dict[str, str], pattern: str
) -> None:
    r = post(client, kit.encode(kit.scene(), "PNG"), **params)
    assert r.status_code == 400
    assert re.search(pattern, r.json()["detail"]), r.json()


def test_request_errors(client: TestClient, kit: Any, photos: dict[str, bytes]) -> None:
    good = kit.encode(kit.scene(), "PNG")
    assert post(client, good, key=None).status_code == 401
    assert post(client, good, key="wrong").status_code == 401
    two = post(client, good, good)
    assert two.status_code == 400 and "exactly one photo" in two.json()["detail"]
    assert post(client, good, good, good, good).status_code == 413  # over max_images, like /v1/route
    assert client.post("/v1/explain", json={"images": []}, headers={"X-API-Key": KEY}).status_code == 400
    bad_type = client.post("/v1/explain", content=b"x", headers={"X-API-Key": KEY, "content-type": "text/plain"})
    assert bad_type.status_code == 415
    b64 = base64.b64encode(photos["webp"]).decode()
    ok = client.post("/v1/explain", json={"images": [b64]}, headers={"X-API-Key": KEY})
    assert ok.status_code == 200 and "file" not in ok.json()


@pytest.mark.parametrize(
    ("name", "status"),
    [("text", 415), ("truncated", 422), ("empty", 422), ("huge_file", 413), ("bomb", 413)],
)
def test_bad_photos_get_their_own_status(client: TestClient, kit: Any, name: str, status: int) -> None:
    jpeg = kit.encode(kit.scene(), "JPEG")
    data = {
        "text": b"hello, this is not a photo",
        "truncated": jpeg[: len(jpeg) // 3],
        "empty": b"",
        "huge_file": b"\x89PNG\r\n\x1a\n" + b"\0" * 300_001,
        "bomb": kit.png_header_only(4000, 4000),
    }[name]
    r = post(client, data)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_one_bad_request_never_fails_its_batch_mates(client: TestClient, kit: Any) -> None:
    good = kit.encode(kit.scene(300, 200), "JPEG")
    jobs = [(good, {}), (b"garbage", {}), (good, {"layers": "stage2"}), (good[:200], {}), (good, {"format": "json"})]
    jobs *= 2
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: post(client, job[0], channels="2", **job[1]), jobs))
    assert [a.status_code for a in answers] == [200, 415, 200, 422, 200] * 2
    assert [layer["name"] for layer in answers[2].json()["layers"]] == ["stage2"]
    assert "values" in answers[4].json()["layers"][0]["channels"][0]


def test_page_replaces_litserve_defaults(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="file"' in html and 'id="api-key"' in html and 'id="overlay"' in html
    assert "litserve running" not in html
    assert client.get("/info").status_code == 404
    for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "/v1/explain" in r.text or asset == "style.css"
    for text in (html, client.get("/static/app.js").text, client.get("/static/style.css").text):
        external = re.findall(r"(?:src|href|url\()\s*=?\s*[\"']?(?:https?:)?//", text)
        assert not external, "the page must not load anything from elsewhere"
    assert client.get("/static/../page.py").status_code == 404
    assert client.get("/static/index.html").status_code == 404


def test_metrics_count_explain_requests(client: TestClient, kit: Any) -> None:
    assert post(client, kit.encode(kit.scene(), "PNG"), channels="1").status_code == 200
    assert post(client, kit.encode(kit.scene(), "PNG"), channels="many").status_code == 400
    text = client.get("/metrics").text
    assert re.search(r'triage_http_requests_total\{endpoint="/v1/explain",status="200"\} [1-9]', text)
    assert re.search(r'triage_http_requests_total\{endpoint="/v1/explain",status="400"\} [1-9]', text)
    assert re.search(r'triage_errors_total\{reason="bad_option"\} [1-9]', text)


def test_a_repeated_option_is_400_not_silently_the_last_one(client: TestClient, kit: Any) -> None:
    r = client.post(
        "/v1/explain?layers=stage1&layers=stage2&channels=1",
        files=[("file", ("a.png", kit.encode(kit.scene(), "PNG")))],
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("layers given more than once; give each option once")


def test_channels_with_leading_zeros_is_that_number(client: TestClient, kit: Any) -> None:
    """Python's int() refuses more than 4300 digits with a ValueError (it was a 500); "0...01" is still 1."""
    r = post(client, kit.encode(kit.scene(), "PNG"), channels="0" * 5000 + "1")
    assert r.status_code == 200, r.text
    assert all(len(layer["channels"]) == 1 for layer in r.json()["layers"])


def test_a_queued_explanation_holds_its_photo_at_display_size_and_draws_the_same_overlay(
    random_model_dir: Path, metrics_dir: Path, kit: Any
) -> None:
    """A batch of explanations waits for its model run holding each photo; at display size (512 px at most) instead
    of up to 50 decoded megapixels. The overlay is drawn at that size either way, so it is the same picture."""
    import json
    from dataclasses import replace

    from service.explain.options import ExplainOptions
    from service.http.uploads import TicketUpload, UploadedPhoto
    from service.inference.explain_api import ExplainAPI, ExplainUpload
    from service.inference.intake import read_photo

    api = ExplainAPI(Settings(model_path=random_model_dir / "triage.onnx", device="cpu"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("service.inference.engine_api.configure_logging", lambda level: None)
        api.setup("cpu")
    data = kit.encode(kit.scene(300, 200).resize((3000, 2000)), "PNG")
    upload = ExplainUpload(TicketUpload("r", time.time(), (UploadedPhoto("a.png", data),)), ExplainOptions())
    decoded = api.decode_request(upload)
    assert decoded.item.photo.image.size == (512, 341)
    assert (decoded.item.photo.width, decoded.item.photo.height) == (3000, 2000)
    full, _ = read_photo(data, api.engine.preprocessing, api.settings.intake_limits)
    answers = [
        json.loads(api.encode_response(api.predict(replace(decoded, item=item))).body) for item in (decoded.item, full)
    ]
    assert answers[0]["cam"]["overlay_png"] == answers[1]["cam"]["overlay_png"]
    assert answers[0]["layers"] == answers[1]["layers"]
