"""``triage predict`` in-process: the answer names device and provider as the service does, and a model that cannot
be used is a one-line error (exit status 2), not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
