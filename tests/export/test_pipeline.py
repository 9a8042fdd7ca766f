"""``triage export`` takes the calibration of the checkpoint it exports, never that of another model's card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.pipeline import ExportError, export_artifacts
from model.card import CARD_NAME, CHECKPOINT_NAME, ONNX_NAME


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run")
    train(TrainOptions(out=out, epochs=1, n_train=32, n_val=16, n_test=16, n_shifted=16, n_real=16, batch_size=16))
    return out


def test_exporting_into_a_folder_of_another_model_uses_the_checkpoints_own_card(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    card = json.loads((run / CARD_NAME).read_text())
    stale = {**card, "calibration": {**card["calibration"], "temperature": 20.0}}
    stale["artifacts"] = {CHECKPOINT_NAME: {"sha256": "0" * 64}}  # another model's checkpoint
    (other / CARD_NAME).write_text(json.dumps(stale))
    written = export_artifacts(run / CHECKPOINT_NAME, other)
    assert written["calibration"] == card["calibration"]
    assert json.loads((other / CARD_NAME).read_text())["calibration"]["temperature"] != 20.0
    assert (other / ONNX_NAME).is_file()


def test_a_checkpoint_without_its_card_is_refused(run: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / CHECKPOINT_NAME, alone / CHECKPOINT_NAME)
    with pytest.raises(ExportError, match="no model card records"):
        export_artifacts(alone / CHECKPOINT_NAME, tmp_path / "out")
    assert not (tmp_path / "out" / ONNX_NAME).exists()
