"""``POST /v1/explain`` in-process (LitServe's test harness, real inference workers) serving an EfficientNet-Lite0:
its stages, the exact class-activation map on the head, effective receptive fields and the layer option's
valid names all follow the served network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from model.receptive_field import stage_fields
from service.settings import Settings
from tests.conftest import LITE0_TEST_SIZE
from tests.lite0_nets import lite0_config
from tests.service.inference.test_explain_api import KEY, post, started_client

CONFIG = lite0_config(LITE0_TEST_SIZE)
STAGES = list(CONFIG.stage_names)


@pytest.fixture(scope="module")
def client(random_lite0_model_dir: Path, metrics_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_path=random_lite0_model_dir / "triage.onnx",
        api_key=KEY,
        device="cpu",
        max_batch_size=2,
        batch_timeout=0.2,
        request_timeout=120.0,
    )
    yield from started_client(settings)


def test_explains_a_photo_with_the_lite0_stages(client: TestClient, kit: Any) -> None:
    r = post(client, kit.encode(kit.scene(320, 240, seed=2), "JPEG"), channels="2", erf="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["network"] == {
        "name": "efficientnet_lite0",
        "input_size": LITE0_TEST_SIZE,
        "stages": STAGES,
        "global_pool": "avg",
    }
    assert [layer["name"] for layer in body["layers"]] == STAGES
    for layer in body["layers"]:
        field = stage_fields(CONFIG)[layer["name"]]
        assert layer["shape"] == [CONFIG.stage_channels()[layer["name"]], *field.out_size]
        assert layer["receptive_field"]["size"] == field.size and layer["about"]
        erf = layer["erf"]
        assert erf["mass_in_box"] is None or erf["mass_in_box"] == pytest.approx(1.0)
    cam = body["cam"]
    assert cam["layer"] == "head" and np.array(cam["values"]).shape == stage_fields(CONFIG)["head"].out_size
    assert cam["sum_plus_bias"] == pytest.approx(cam["logit"], abs=1e-4)
    assert body["erf_check"]["numpy_onnx_max_abs_diff"] < 1e-3


def test_the_layer_option_lists_the_lite0_stages(client: TestClient, kit: Any) -> None:
    r = post(client, kit.encode(kit.scene(), "PNG"), layers="stage8")
    assert r.status_code == 400
    assert r.json()["detail"].endswith(f"valid layers are {', '.join(STAGES)}")
    r = post(client, kit.encode(kit.scene(), "PNG"), layers="head,stem", channels="1")
    assert r.status_code == 200, r.text
    assert [layer["name"] for layer in r.json()["layers"]] == ["head", "stem"]
