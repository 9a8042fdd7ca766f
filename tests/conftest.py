"""Shared fixtures: the repository root on sys.path and a model directory with random weights; the check that no
process group the tests started, and none of their services' temporary folders, outlives the session
(``tests/started_processes.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.started_processes import pytest_sessionfinish, pytest_sessionstart  # noqa: E402  (the hooks)

__all__ = ["pytest_sessionfinish", "pytest_sessionstart"]


LITE0_TEST_SIZE = 96  # the random EfficientNet-Lite0's input side: small enough for fast tests, 3x3 at the head


def write_model_dir(out: Path, net: object, name: str) -> Path:
    """Export ``net`` (eval mode) to ``out/triage.onnx`` with a report and a model card, as export writes them."""
    from export.onnx_export import export_onnx
    from model.card import ONNX_NAME, sha256_file, write_card
    from model.config import CLASSES

    export_onnx(net, out / ONNX_NAME, {"name": name, "version": "0.0.0"})  # type: ignore[arg-type]
    (out / "report.html").write_text(f"<!doctype html><title>Training report: {name}</title><p>untrained")
    config = net.config  # type: ignore[attr-defined]
    write_card(
        out / "model_card.json",
        {
            "name": name,
            "version": "0.0.0",
            "classes": list(CLASSES),
            "preprocessing": config.preprocessing.to_dict(),
            "network": config.to_dict(),
            "calibration": {"temperature": 1.0, "review_threshold": 0.6},
            "artifacts": {ONNX_NAME: {"sha256": sha256_file(out / ONNX_NAME)}},
            "report": {"file": "report.html", "sha256": sha256_file(out / "report.html")},
        },
    )
    return out


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``triage.onnx`` + ``model_card.json`` for a randomly initialised network (seed 0), as export writes them.

    For tests of the serving machinery that must not depend on the shipped, trained model.
    """
    from model.network import build_network

    return write_model_dir(tmp_path_factory.mktemp("random_model"), build_network(seed=0).eval(), "random-test-model")


@pytest.fixture(scope="session")
def random_lite0_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same for a random EfficientNet-Lite0 at ``LITE0_TEST_SIZE`` px whose batch-norms keep every stage map of
    order 1 (``tests.lite0_nets.calibrated_lite0``, seed 0)."""
    from tests.lite0_nets import calibrated_lite0

    net = calibrated_lite0(LITE0_TEST_SIZE, seed=0)
    return write_model_dir(tmp_path_factory.mktemp("random_lite0"), net, "random-lite0-model")
