"""The explanation page in a real browser: Debian's chromium, headless, driven by Playwright against a running
``triage serve``. Uploads a generated damaged-screen photo, waits for the route, checks the class-activation
overlay is drawn, clicks feature-map cells and checks the box drawn on the photo is the API's receptive-field box
for that cell, at the right place on screen. Saves a screenshot (``explain_page.png`` in the test's temporary
directory, and in ``$TRIAGE_TEST_ARTIFACTS`` when set)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api  # the dev extra; drives the system chromium, downloads no browser

from model.config import NetworkConfig
from model.preprocess import letterbox_geometry
from model.receptive_field import cell_field_in_photo, stage_fields
from model.synth import render_photo
from tests.service.serve_process import serving

CHROMIUM = os.environ.get("TRIAGE_CHROMIUM", "/usr/bin/chromium")
KEY = "page-test-key"
CHANNELS = "4"
PATIENCE_MS = 120_000  # for each page action: an explanation is quick on a quiet machine, not on a loaded one


@pytest.fixture(scope="module")
def service(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``triage serve`` on loopback with an API key; yields its base URL."""
    log = tmp_path_factory.mktemp("page") / "serve.log"
    with serving(random_model_dir / "triage.onnx", log, TRIAGE_API_KEY=KEY) as served:
        yield served.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def analytic(stage: str, y: int, x: int, width: int, height: int) -> list[int]:
    config = NetworkConfig()
    c = cell_field_in_photo(config, stage, y, x, letterbox_geometry(width, height, config.preprocessing.size)).clipped
    return [c.x0, c.y0, c.x1, c.y1]


def save_screenshot(page: Any, path: Path) -> Path:
    """The whole page as ``path``, copied into ``$TRIAGE_TEST_ARTIFACTS`` when set."""
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("TRIAGE_TEST_ARTIFACTS"):
        target = Path(os.environ["TRIAGE_TEST_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path


def drawn_box(page: Any) -> list[int]:
    return [int(v) for v in page.get_attribute("#cell-box", "data-box").split(",")]


def assert_on_screen_where_it_belongs(
    page: Any, box: list[int], photo: dict[str, int], rect: str = "#cell-box"
) -> None:
    """The SVG rectangle ``rect`` covers exactly the photo pixels ``box`` on the displayed overlay (within a
    pixel)."""
    shown = page.locator("#overlay").bounding_box()
    drawn = page.locator(rect).bounding_box()
    sx, sy = shown["width"] / photo["width"], shown["height"] / photo["height"]
    expected = (shown["x"] + box[0] * sx, shown["y"] + box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy)
    got = (drawn["x"], drawn["y"], drawn["width"], drawn["height"])
    # the stroke is drawn half outside the rectangle: allow its width plus rounding
    assert all(abs(g - e) <= 3.5 for g, e in zip(got, expected, strict=True)), (got, expected)


def click_cell(page: Any, stage: str, channel: int, y: int, x: int, shape: list[int]) -> None:
    image = page.locator(f'.tile[data-layer="{stage}"][data-channel="{channel}"] img')
    size = image.bounding_box()
    _, h, w = shape
    image.click(position={"x": (x + 0.5) * size["width"] / w, "y": (y + 0.5) * size["height"] / h})


def test_page_explains_an_uploaded_photo(service: str, browser: Any, tmp_path: Path) -> None:
    synth = render_photo(11, "screen_damage", split="test")
    photo_file = tmp_path / "cracked_screen.jpg"
    photo_file.write_bytes(synth.encode("JPEG"))
    width, height = synth.image.size
    api = httpx.post(
        f"{service}/v1/explain",
        params={"channels": CHANNELS},
        files={"file": (photo_file.name, photo_file.read_bytes())},
        headers={"X-API-Key": KEY},
        timeout=PATIENCE_MS / 1000,
    ).json()

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PATIENCE_MS)
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(service + "/")
    assert page.title().startswith("Ticket photo triage")

    # Without the key the API's 401 is shown plainly.
    page.set_input_files("#file", str(photo_file))
    page.wait_for_selector("#error:not([hidden])")
    assert "401" in page.inner_text("#error") and "API key" in page.inner_text("#error")

    page.fill("#api-key", KEY)
    page.fill("#channels", CHANNELS)
    page.set_input_files("#file", str(photo_file))
    page.wait_for_function("document.getElementById('route').dataset.route !== undefined")
    assert page.is_hidden("#error")
    assert page.get_attribute("#route", "data-route") == api["route"]
    assert f"{100 * api['confidence']:.1f}%" in page.inner_text("#confidence")

    # The class-activation overlay is drawn: a decoded image of the display size, with colour in it.
    page.wait_for_function("document.getElementById('overlay').complete")
    drawn = page.evaluate(
        """() => {
        const img = document.getElementById('overlay');
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let colourful = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 40) colourful++;
        }
        return {w: img.naturalWidth, h: img.naturalHeight, colourful: colourful / (c.width * c.height)};
    }"""
    )
    assert (drawn["w"], drawn["h"]) == (api["display"]["width"], api["display"]["height"])
    assert drawn["colourful"] > 0.01, "no heatmap colour on the overlay"
    # The peak cell is drawn as its own square, its receptive field as a fainter outline around it.
    peak = api["cam"]["peak"]
    assert [int(v) for v in page.get_attribute("#peak-box", "data-box").split(",")] == peak["footprint"]
    assert [int(v) for v in page.get_attribute("#peak-field", "data-box").split(",")] == peak["box"]
    assert_on_screen_where_it_belongs(page, peak["footprint"], api["photo"], "#peak-box")
    assert_on_screen_where_it_belongs(page, peak["box"], api["photo"], "#peak-field")
    assert page.inner_text("#photo-name") == photo_file.name

    # Every stage is shown as a grid of the API's top channels.
    layers = {layer["name"]: layer for layer in api["layers"]}
    for name, layer in layers.items():
        shown = page.locator(f'.tile[data-layer="{name}"]').evaluate_all("ts => ts.map(t => +t.dataset.channel)")
        assert shown == [c["index"] for c in layer["channels"]]

    # Clicking a channel's strongest cell draws the API's box for it, where it belongs on the photo.
    for name in ("stage3", "stage1"):
        layer = layers[name]
        channel = layer["channels"][0]
        click_cell(page, name, channel["index"], *channel["argmax"], layer["shape"])
        assert page.get_attribute("#cell-box", "data-cell") == ",".join(map(str, channel["argmax"]))
        assert drawn_box(page) == channel["box"] == analytic(name, *channel["argmax"], width, height)
        assert_on_screen_where_it_belongs(page, drawn_box(page), api["photo"])

    # Any other cell: the analytic receptive field of that cell.
    layer = layers["stage2"]
    y, x = 3, layer["shape"][2] - 5
    click_cell(page, "stage2", layer["channels"][1]["index"], y, x, layer["shape"])
    assert page.get_attribute("#cell-box", "data-cell") == f"{y},{x}"
    assert drawn_box(page) == analytic("stage2", y, x, width, height)
    assert_on_screen_where_it_belongs(page, drawn_box(page), api["photo"])
    assert "stage2, channel" in page.inner_text("#cell-info")

    screenshot = save_screenshot(page, tmp_path / "explain_page.png")
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000
    assert not [e for e in console_errors if "401" not in e], console_errors
    page.close()


def test_page_shows_a_bad_photo_error_after_a_drop(service: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(service + "/")
    page.fill("#api-key", KEY)
    transfer = page.evaluate_handle(
        """() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['this is not a photo'], 'notes.txt', {type: 'text/plain'}));
        return dt;
    }"""
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert "415" in message and "not a supported image type" in message
    assert page.is_hidden("#result")
    page.close()


def explained(service: str, name: str, data: bytes) -> dict[str, Any]:
    answer = httpx.post(
        f"{service}/v1/explain",
        params={"channels": "1"},
        files={"file": (name, data)},
        headers={"X-API-Key": KEY},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_failed_upload_leaves_no_earlier_result_below_its_error(service: str, browser: Any, tmp_path: Path) -> None:
    photo = tmp_path / "first_photo.jpg"
    photo.write_bytes(render_photo(3, "general_returns", split="test").encode("JPEG"))
    broken = tmp_path / "second_photo.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a photo")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(service + "/")
    page.fill("#api-key", KEY)
    page.fill("#channels", "1")
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.getElementById('route').dataset.route !== undefined")
    assert page.is_visible("#result") and page.inner_text("#photo-name") == photo.name

    page.set_input_files("#file", str(broken))
    page.wait_for_selector("#error:not([hidden])")
    message = page.inner_text("#error")
    assert message.startswith(f"{broken.name}: ") and "422" in message, message
    assert page.is_hidden("#result")
    assert page.evaluate("document.getElementById('route').dataset.route") is None
    assert page.locator(".tile").count() == 0 and page.inner_text("#route") == ""
    assert page.get_attribute("#overlay", "src") is None
    page.screenshot(path=str(tmp_path / "failed_upload.png"), full_page=True)

    # The next good photo is shown again, and the error goes.
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.getElementById('route').dataset.route !== undefined")
    assert page.is_hidden("#error") and page.is_visible("#result")
    page.close()


@pytest.mark.parametrize(
    ("route", "confidence", "expected"),
    [
        ("needs_review", 0.912, "needs review: leans screen_damage at 91.2%, below the 96.1% threshold"),
        ("screen_damage", 0.987, "screen damage (confidence 98.7%)"),
    ],
)
def test_the_headline_says_where_a_photo_leans_and_the_threshold_it_missed(
    service: str, browser: Any, tmp_path: Path, route: str, confidence: float, expected: str
) -> None:
    """The page draws whatever the API answers: a real answer, its decision set to a known one."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(render_photo(5, "screen_damage", split="test").encode("JPEG"))
    answer = explained(service, photo.name, photo.read_bytes())
    answer.update(
        route=route,
        confidence=confidence,
        probabilities={"screen_damage": confidence, "general_returns": 1 - confidence},
        review_threshold=0.961,
    )
    page = browser.new_page()
    page.route(
        "**/v1/explain?*", lambda r: r.fulfill(status=200, content_type="application/json", body=json.dumps(answer))
    )
    page.goto(service + "/")
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.getElementById('route').dataset.route !== undefined")
    headline = page.inner_text("#summary p:nth-child(2)")
    assert headline == f"Route: {expected}", headline
    page.close()


def test_the_report_link_opens_the_served_models_training_report(service: str, browser: Any) -> None:
    """The link sends the API key (a plain link could not) and shows the report the card records; without the key
    it says why instead of opening a 401."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(service + "/")
    page.fill("#api-key", "wrong-key")
    with context.expect_page() as opened:
        page.click("#report-link")
    page.wait_for_selector("#error:not([hidden])", timeout=PATIENCE_MS)
    assert "401" in page.inner_text("#error")
    assert opened.value.is_closed()  # no empty tab is left behind

    page.fill("#api-key", KEY)
    with context.expect_page() as opened:
        page.click("#report-link")
    report = opened.value
    report.wait_for_function("document.title.startsWith('Training report')", timeout=PATIENCE_MS)
    assert "random-test-model" in report.title()
    context.close()


@pytest.fixture(scope="module")
def lite0_service(random_lite0_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``triage serve`` of the random EfficientNet-Lite0 model (96 px input); yields its base URL."""
    log = tmp_path_factory.mktemp("page_lite0") / "serve.log"
    with serving(random_lite0_model_dir / "triage.onnx", log, TRIAGE_API_KEY=KEY) as served:
        yield served.url


def test_the_page_names_the_stages_of_an_efficientnet_lite0(lite0_service: str, browser: Any, tmp_path: Path) -> None:
    """Served an EfficientNet-Lite0, the page shows its nine stages (stem, stage1..stage7, head), each captioned with
    what it is, the class-activation map on the head, and a clicked cell's box is the Lite0 analytic one."""
    from tests.conftest import LITE0_TEST_SIZE
    from tests.lite0_nets import lite0_config

    config = lite0_config(LITE0_TEST_SIZE)
    synth = render_photo(11, "screen_damage", split="test")
    photo_file = tmp_path / "cracked_screen.jpg"
    photo_file.write_bytes(synth.encode("JPEG"))
    width, height = synth.image.size
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PATIENCE_MS)
    page.goto(lite0_service + "/")
    page.fill("#api-key", KEY)
    page.fill("#channels", "2")
    page.check("#erf")
    page.set_input_files("#file", str(photo_file))
    page.wait_for_function("document.getElementById('route').dataset.route !== undefined")
    assert page.is_hidden("#error")

    titles = page.locator(".layer h2").all_inner_texts()
    assert [t.split(":")[0] for t in titles] == ["stem", *(f"stage{i}" for i in range(1, 8)), "head"]
    assert "scratch" not in page.inner_text("#network")
    assert "efficientnet_lite0" in page.inner_text("#network") and f"{LITE0_TEST_SIZE}\u00d7" in page.inner_text(
        "#network"
    )
    assert "9 stages (stem, stage1" in page.inner_text("#network")
    abouts = dict(zip(titles, page.locator(".layer .stage-about").all_inner_texts(), strict=True))
    about = {title.split(":")[0]: text for title, text in abouts.items()}
    assert about["stem"].startswith("conv 3\u00d73 stride 2") and "ReLU6" in about["stem"]
    assert "stride 2 in block 1" in about["stage2"] and "5\u00d75 depthwise" in about["stage3"]
    assert "1280 channels" in about["head"]
    assert [name for name, text in about.items() if "stride 2" in text] == [
        "stem",
        "stage2",
        "stage3",
        "stage4",
        "stage6",
    ]  # where Lite0 halves the map (the scratch network does it in stage1 only)
    for title in titles:  # each stage's shape is the Lite0 one at this input size
        name = title.split(":")[0]
        h, w = stage_fields(config)[name].out_size
        assert title == f"{name}: {config.stage_channels()[name]} channels of {h}\u00d7{w}"
    cam = page.inner_text("#cam-caption")
    assert cam.startswith("Class-activation map for ") and " on head (conv 1\u00d71 to 1280 channels" in cam
    assert page.locator(".layer .erf").count() == 9  # an effective receptive field per stage, each captioned
    erf_captions = page.locator(".erf figcaption").all_inner_texts()
    assert all(t.startswith("Effective receptive field") for t in erf_captions)
    # this model's head peaks at the ReLU6 cap: its caption names the cell used instead, and why
    assert "capped at 6 by its ReLU6" in erf_captions[-1] and "the strongest cell," not in erf_captions[-1]

    channel = int(page.locator('.tile[data-layer="stage3"]').first.get_attribute("data-channel"))
    h, w = stage_fields(config)["stage3"].out_size
    y, x = 2, w - 3
    click_cell(page, "stage3", channel, y, x, [0, h, w])
    geo = letterbox_geometry(width, height, LITE0_TEST_SIZE)
    c = cell_field_in_photo(config, "stage3", y, x, geo).clipped
    assert drawn_box(page) == [c.x0, c.y0, c.x1, c.y1]
    assert "stage3, channel" in page.inner_text("#cell-info")
    save_screenshot(page, tmp_path / "explain_page_lite0.png")
    page.close()
