"""The training report: written by training and by ``triage report``, every section and picture present, its numbers
those of the card, rendered by a real browser with no console error and no request; the shipped model's report."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.card import CARD_NAME, sha256_file
from model.config import CLASSES

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "artifacts"
CHROMIUM = os.environ.get("TRIAGE_CHROMIUM", "/usr/bin/chromium")
SECTIONS = ("confusion", "reliability", "coverage", "wrong", "threshold")


def report_data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert found, "the report carries no report-data block"
    return json.loads(html.unescape(found.group(1)))


def images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_numbers_match_card(page: str, card: dict[str, Any], splits: tuple[str, ...]) -> None:
    data = report_data(page)
    assert (data["name"], data["version"]) == (card["name"], card["version"])
    assert sorted(data["splits"]) == sorted(splits)
    for split in splits:
        shown, carded = data["splits"][split], card["metrics"][split]
        assert shown["n"] == carded["n"]
        assert shown["confusion"] == carded["confusion"]
        assert shown["routing"] == pytest.approx(carded["routing"], abs=1e-9)
        for key in ("accuracy", "ece", "ece_uncalibrated"):
            assert shown[key] == pytest.approx(carded[key], abs=1e-6), (split, key)
        for name in CLASSES:
            assert shown["per_class"][name] == pytest.approx(carded["per_class"][name], abs=1e-9)
        # The table the reader sees shows the same accuracy.
        assert f'<td class="n">{carded["accuracy"]:.4f}</td>' in page


def assert_complete(page: str, splits: tuple[str, ...]) -> None:
    for anchor in ("summary", "learning-curves", *(f"split-{s}" for s in splits)):
        assert f'id="{anchor}"' in page, anchor
    for split in splits:
        for section in SECTIONS:
            assert f'id="{split}-{section}"' in page, (split, section)
    pictures = images(page)
    assert len(pictures) >= 1 + 3 * len(splits)
    for png in pictures:
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            assert img.width > 10 and img.height > 10
    assert "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained by ``triage train --data`` on a small folder of generated photos."""
    from model.synth import render_photo
    from triage_cli.commands import main

    folder = tmp_path_factory.mktemp("report") / "photos"
    for label in CLASSES:
        (folder / label).mkdir(parents=True)
        for i in range(14):
            (folder / label / f"{label}_{i:02d}.jpg").write_bytes(render_photo(9000 + i, label).encode())
    out = folder.parent / "model"
    assert main(["train", "--data", str(folder), "--epochs", "2", "--out", str(out), "--allow-weak"]) == 0
    return out


def test_training_writes_a_complete_report_whose_numbers_are_the_cards(folder_model: Path) -> None:
    card = json.loads((folder_model / CARD_NAME).read_text())
    page = (folder_model / "report.html").read_text()
    assert card["report"]["sha256"] == sha256_file(folder_model / "report.html")
    assert_complete(page, ("test",))
    assert_numbers_match_card(page, card, ("test",))
    # The user's own photos are named in the galleries, and each epoch's training accuracy is on the curves.
    assert re.search(r"#\d+ (screen_damage|general_returns)/\w+_\d\d\.jpg", page)
    assert all(0 <= h["train_accuracy"] <= 1 for h in card["training"]["history"])


def test_triage_report_rewrites_the_same_report_for_an_existing_model(folder_model: Path) -> None:
    from triage_cli.commands import main

    before = report_data((folder_model / "report.html").read_text())
    (folder_model / "report.html").unlink()
    assert main(["report", "--model", str(folder_model)]) == 0
    assert report_data((folder_model / "report.html").read_text()) == before
    assert main(["report", "--model", str(folder_model / "nowhere")]) == 2


def test_the_report_renders_in_chromium_without_errors_or_requests(folder_model: Path) -> None:
    from playwright import sync_api  # the dev extra; drives the system chromium, downloads no browser

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((folder_model / "report.html").as_uri())
            page.wait_for_load_state("load")
            drawn = page.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
            total = page.evaluate("document.images.length")
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert drawn == total > 0


def test_the_shipped_model_has_a_report_that_matches_its_card() -> None:
    card = json.loads((SHIPPED / CARD_NAME).read_text())
    report = SHIPPED / card["report"]["file"]
    assert sha256_file(report) == card["report"]["sha256"]
    page = report.read_text()
    splits = tuple(s for s in ("test", "shifted", "real") if s in card["metrics"])
    assert_complete(page, splits)
    assert_numbers_match_card(page, card, splits)
    for split in splits:
        if card["training"]["data"]["kind"] == "synthetic":
            assert f'id="{split}-factors"' in page
    # README's picture is one of the report's, byte for byte.
    readme_pictures = re.findall(r"!\[[^\]]*\]\((docs/images/report-[^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert readme_pictures, "README shows no picture from the report"
    for picture in readme_pictures:
        assert (ROOT / picture).read_bytes() in images(page)


def test_reliability_bins_match_the_ece_they_illustrate() -> None:
    from model.metrics import expected_calibration_error
    from model.report.charts import reliability_bins

    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 500)
    probs = np.stack([1 - p1, p1], axis=1)
    labels = (rng.uniform(0, 1, 500) < p1).astype(int)
    rows = reliability_bins(probs, labels)
    assert sum(r["count"] for r in rows) == 500
    ece = sum(r["count"] / 500 * abs(r["accuracy"] - r["confidence"]) for r in rows)
    assert ece == pytest.approx(expected_calibration_error(probs, labels))
