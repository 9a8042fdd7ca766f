"""deploy/trim_venv.sh on a made-up virtual environment: it removes what serving never loads and keeps the rest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "trim_venv.sh"

KEPT = (
    "numpy/__init__.py",
    "numpy/__pycache__/__init__.cpython-311.pyc",
    "numpy/testing/__init__.py",
    "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
    "onnxruntime/capi/libonnxruntime.so.1.31.1",
    "onnxruntime/capi/libonnxruntime_providers_shared.so",
    "onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so",
    "service/engine.py",
)
REMOVED_ALWAYS = (
    "numpy/_core/tests/test_api.py",
    "numpy/_core/tests/__pycache__/test_api.cpython-311.pyc",
    "numpy/_core/include/numpy/ndarrayobject.h",
    "numpy/__init__.pyi",
    "zmq/backend/cython/_zmq.pxd",
    "zmq/utils/pyversion_compat.h",
    "uvloop/loop.pyx",
    "uvloop/handles/process.c",
)
CUDA_PROVIDERS = (
    "onnxruntime/capi/libonnxruntime_providers_cuda.so",
    "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
)


def make_venv(root: Path) -> Path:
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    for relative in (*KEPT, *REMOVED_ALWAYS, *CUDA_PROVIDERS):
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 2048)
    return site


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_trims_tests_sources_headers_and_for_cpu_the_cuda_providers(tmp_path: Path, target: str) -> None:
    site = make_venv(tmp_path)
    done = subprocess.run(["sh", str(SCRIPT), str(tmp_path / "venv"), target], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "MiB to" in done.stdout
    for relative in KEPT:
        assert (site / relative).is_file(), relative
    for relative in REMOVED_ALWAYS:
        assert not (site / relative).exists(), relative
    assert not (site / "numpy/_core/tests").exists()
    for relative in CUDA_PROVIDERS:
        assert (site / relative).exists() == (target == "gpu"), relative


def test_refuses_an_unknown_target_and_a_folder_without_site_packages(tmp_path: Path) -> None:
    site = make_venv(tmp_path)
    wrong = subprocess.run(["sh", str(SCRIPT), str(tmp_path / "venv"), "tpu"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "cpu or gpu" in wrong.stderr
    assert (site / "numpy/_core/tests/test_api.py").exists()
    empty = tmp_path / "empty"
    (empty / "lib").mkdir(parents=True)
    missing = subprocess.run(["sh", str(SCRIPT), str(empty), "cpu"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no site-packages" in missing.stderr
