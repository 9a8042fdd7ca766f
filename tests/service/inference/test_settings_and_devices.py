"""Settings from TRIAGE_* variables, and device/provider selection with simulated provider lists."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.inference.devices import DevicePlan, pin_worker_gpu, plan_devices, visible_gpus
from service.inference.engine import CPU, CUDA, DeviceError, provider_in_use
from service.settings import Settings


def test_settings_read_the_triage_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_PORT", "9123")
    monkeypatch.setenv("TRIAGE_API_KEY", "s3cret")
    monkeypatch.setenv("TRIAGE_DEVICE", "cpu")
    monkeypatch.setenv("TRIAGE_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("TRIAGE_MODEL_PATH", "/models/triage.onnx")
    settings = Settings()
    assert settings.port == 9123 and settings.device == "cpu" and settings.max_batch_size == 16
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.model_path == Path("/models/triage.onnx")


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRIAGE_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert (settings.host, settings.port, settings.api_key, settings.max_images) == ("0.0.0.0", 8000, None, 10)
    assert settings.device == "auto" and settings.model_path == Path("artifacts/triage.onnx")
    assert (settings.worker_restarts, settings.worker_restart_window) == (3, 300.0)
    assert isinstance(settings.max_request_bytes, int)
    assert settings.max_request_bytes > settings.max_images * settings.max_bytes


def test_the_body_limit_holds_ten_photos_in_wrapped_escaped_base64() -> None:
    """Ten photos at the byte limit, base64 in 76-character lines with CRLF ends, inside JSON whose encoder escapes
    slashes: the body still fits the limit."""
    import base64
    import json

    import numpy as np

    settings = Settings(max_bytes=2 * 1024 * 1024, max_images=10)  # the excess outgrows the envelope allowance
    photo = np.random.default_rng(0).integers(0, 256, settings.max_bytes, dtype=np.uint8).tobytes()
    wrapped = base64.encodebytes(photo).decode().replace("\n", "\r\n")
    body = json.dumps({"images": [wrapped] * settings.max_images}).replace("/", "\\/")
    assert settings.max_images * settings.max_bytes * 4 // 3 < len(body) <= settings.max_request_bytes


@pytest.mark.parametrize("key", ["clé", "two words", "tab\tkey"])
def test_an_api_key_no_header_could_carry_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="printable ASCII"):
        Settings(api_key=key)


def test_a_key_read_from_a_file_loses_its_newline_and_errors_never_show_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.server import main

    assert Settings(api_key="s3cr3t-KEY\n").api_key.get_secret_value() == "s3cr3t-KEY"
    monkeypatch.setenv("TRIAGE_API_KEY", "s3cr3t-ключ")
    assert main() == 2
    err = capsys.readouterr().err
    assert "TRIAGE_API_KEY" in err and "printable ASCII" in err and "s3cr3t" not in err


def test_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_API_KEY", "")
    assert Settings().api_key is None


@pytest.mark.parametrize(
    "bad",
    [
        {"device": "tpu"},
        {"port": 0},
        {"batch_timeout": 5.0, "request_timeout": 1.0},
        {"drain_timeout": 30.0},
        {"worker_restarts": -1},
        {"worker_restart_window": 0},
    ],
)
def test_invalid_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


@pytest.mark.parametrize(
    ("preference", "available", "gpus", "expected"),
    [
        ("auto", [CUDA, CPU], ["0"], DevicePlan("cuda", 1, (CUDA, CPU))),
        ("auto", [CUDA, CPU], ["0", "1"], DevicePlan("cuda", 2, (CUDA, CPU))),
        ("auto", [CUDA, CPU], [], DevicePlan("cpu", 1, (CPU,))),
        ("auto", [CPU], ["0"], DevicePlan("cpu", 1, (CPU,))),
        ("cpu", [CUDA, CPU], ["0"], DevicePlan("cpu", 1, (CPU,))),
        ("cuda", [CUDA, CPU], ["3"], DevicePlan("cuda", 1, (CUDA, CPU))),
    ],
)
def test_device_plan(preference: str, available: list[str], gpus: list[str], expected: DevicePlan) -> None:
    assert plan_devices(preference, available, gpus) == expected


@pytest.mark.parametrize(("available", "gpus"), [([CUDA, CPU], []), ([CPU], ["0"])])
def test_cuda_without_a_usable_gpu_is_an_error(available: list[str], gpus: list[str]) -> None:
    with pytest.raises(DeviceError, match="device=cuda"):
        plan_devices("cuda", available, gpus)


def test_provider_in_use_tells_the_truth(caplog: pytest.LogCaptureFixture) -> None:
    assert provider_in_use("auto", [CUDA, CPU], [CUDA, CPU]) == CUDA
    with caplog.at_level(logging.WARNING):
        assert provider_in_use("auto", [CUDA, CPU], [CPU]) == CPU
    assert "could not be created" in caplog.text
    assert provider_in_use("cpu", [CPU], [CPU]) == CPU
    with pytest.raises(DeviceError):
        provider_in_use("cuda", [CUDA, CPU], [CPU])


def test_visible_gpus_follow_cuda_visible_devices(tmp_path: Path) -> None:
    (tmp_path / "nvidia0").touch()
    assert visible_gpus(tmp_path, env="2,3") == ["2", "3"]
    assert visible_gpus(tmp_path, env="") == []
    assert visible_gpus(tmp_path, env="-1") == []


def test_visible_gpus_from_device_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert visible_gpus(tmp_path) == ["0", "1", "10"]


def test_worker_pins_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    pin_worker_gpu("cuda:1", ["5", "7"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    pin_worker_gpu("cpu", ["5", "7"])
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
