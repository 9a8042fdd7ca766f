"""A retrained model's name and version come from its card: in ``/v1/model``, every answer's ``model`` and the
model metric's labels (real inference workers, in-process)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from model.card import CARD_NAME, ONNX_NAME, sha256_file
from service.metrics import MODEL_INFO
from service.settings import Settings
from tests.service.test_api_inprocess import serving

NAME, VERSION = "returns-desk-retrained", "20261207T221112Z"


def test_the_cards_name_and_version_are_served_everywhere(
    random_model_dir: Path, metrics_dir: Path, photos: dict[str, bytes], tmp_path: Path
) -> None:
    model = tmp_path / "retrained"
    shutil.copytree(random_model_dir, model)
    card = json.loads((model / CARD_NAME).read_text())
    assert (card["name"], card["version"]) != (NAME, VERSION)
    (model / CARD_NAME).write_text(json.dumps({**card, "name": NAME, "version": VERSION}))
    sha256 = sha256_file(model / ONNX_NAME)
    settings = Settings(
        model_path=model / ONNX_NAME, device="cpu", handoff_dir=None, workers_per_device=1, request_timeout=60.0
    )
    with serving(settings) as (client, _):
        served = client.get("/v1/model").json()
        assert (served["name"], served["version"]) == (NAME, VERSION)
        answer = client.post("/v1/route", files=[("file", ("a.jpg", photos["jpeg"], "image/jpeg"))])
        assert answer.status_code == 200
        assert answer.json()["model"] == {"name": NAME, "version": VERSION, "sha256": sha256}
        info = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(f"{MODEL_INFO}{{")]
        # (any: other tests' servers in the same session share the metrics folder)
        assert any(f'name="{NAME}"' in ln and f'version="{VERSION}"' in ln and sha256 in ln for ln in info), info
