"""``triage predict`` in-process: the answer names device and provider as the service does, and a model that cannot
be used is a one-line error (exit status 2), not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from triage_cli.commands import main


def test_predict_reports_device_and_provider_like_the_service(
    random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(photos["jpeg"])
    assert main(["predict", str(photo), "--json", "--model", str(random_model_dir / "triage.onnx")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["device"] == "cpu" and answer["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("problem", ["missing", "no card", "not onnx"])
def test_an_unusable_model_is_a_one_line_error(
    random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(photos["jpeg"])
    model = tmp_path / "model" / "triage.onnx"
    model.parent.mkdir()
    if problem != "missing":
        shutil.copy(random_model_dir / "triage.onnx", model)
    if problem == "not onnx":
        shutil.copy(random_model_dir / "model_card.json", model.parent / "model_card.json")
        model.write_bytes(b"not an onnx file")
    for command in (["predict", str(photo)], ["explain", str(photo), "--out", str(tmp_path / "x")]):
        assert main([*command, "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"triage {command[0]}: cannot use the model") and "Traceback" not in err


def test_a_folder_stands_for_the_photos_below_it(
    random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ticket"
    (folder / "more").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(photos["jpeg"])
    (folder / "more" / "b.PNG").write_bytes(photos["png"])
    (folder / "notes.txt").write_text("not a photo")
    assert main(["predict", str(folder), "--json", "--model", str(random_model_dir / "triage.onnx")]) == 0
    files = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert files == [str(folder / "a.jpg"), str(folder / "more" / "b.PNG")]


def test_a_local_png_over_the_upload_byte_limit_is_routed(
    random_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A phone screenshot saved as PNG: larger than the service's upload limit in bytes, well within its pixel
    limit. The byte limit protects the service; a local file is judged by its pixels only."""
    from PIL import Image

    from service.inference.intake import IntakeLimits

    limits = IntakeLimits()
    width, height = 3000, 2400
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    photo = tmp_path / "screenshot.png"
    Image.fromarray(noise).save(photo, "PNG", compress_level=0)
    assert photo.stat().st_size > limits.max_bytes and width * height < limits.max_pixels
    assert main(["predict", str(photo), "--json", "--model", str(random_model_dir / "triage.onnx")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["photo"] == {"width": width, "height": height} and "error" not in answer


def test_a_local_photo_over_the_pixel_limit_is_still_refused(
    random_model_dir: Path, kit: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.inference.intake import IntakeLimits

    photo = tmp_path / "bomb.png"
    photo.write_bytes(kit.png_header_only(10_000, 6_000))  # 60 MP claimed in a few hundred bytes
    assert IntakeLimits().max_pixels < 10_000 * 6_000
    assert main(["predict", str(photo), "--json", "--model", str(random_model_dir / "triage.onnx")]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["status"] == 413 and "pixels" in error["message"]


def test_local_answers_name_the_model_from_its_card(
    random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a retrained model is called travels from its card into every answer, as the service's answers do."""
    from model.card import CARD_NAME, sha256_file

    model = tmp_path / "retrained"
    shutil.copytree(random_model_dir, model)
    card = json.loads((model / CARD_NAME).read_text())
    (model / CARD_NAME).write_text(json.dumps({**card, "name": "returns-desk", "version": "20261207T221112Z"}))
    photo = tmp_path / "a.jpg"
    photo.write_bytes(photos["jpeg"])
    assert main(["predict", str(photo), "--json", "--model", str(model / "triage.onnx")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == {
        "name": "returns-desk",
        "version": "20261207T221112Z",
        "sha256": sha256_file(model / "triage.onnx"),
    }
