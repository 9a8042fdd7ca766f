"""requirements/serving.lock is the serving set: what pip resolves for the project's base dependencies, what this
environment serves with, what the images install; it holds no torch, and the Makefile installs against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "serving.lock"


def test_lock_pins_every_package_exactly_and_holds_no_torch(serving_lock: ModuleType) -> None:
    pins = serving_lock.read_lock(LOCK)
    assert len(pins) >= 20
    for name in pins:
        assert not name.startswith(("torch", "nvidia-", "triton")), name
    for needed in ("onnxruntime-gpu", "litserve", "prometheus-client", "pydantic-settings", "pillow-heif"):
        assert needed in pins


def test_lock_equals_the_installed_closure_of_the_base_dependencies(serving_lock: ModuleType) -> None:
    """This environment (installed with -c requirements/serving.lock) serves with exactly the locked versions."""
    resolved = serving_lock.resolve(serving_lock.base_requirements())
    assert serving_lock.diff(resolved, serving_lock.read_lock(LOCK)) == []
    assert serving_lock.main(["--check"]) == 0


def test_exact_check_rejects_anything_beside_the_lock(
    serving_lock: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The images' build step: the venv must hold the lock and the project, nothing else."""
    pins = serving_lock.read_lock(LOCK)
    project = serving_lock.project_name()
    monkeypatch.setattr(serving_lock, "installed", lambda: {**pins, project: "0.1.0"})
    assert serving_lock.main(["--check", "--exact"]) == 0
    monkeypatch.setattr(serving_lock, "installed", lambda: {**pins, project: "0.1.0", "torch": "2.14.1"})
    assert serving_lock.main(["--check", "--exact"]) == 1
    assert "torch==2.14.1 is installed but not locked" in capsys.readouterr().err


def test_lock_equals_what_pip_resolves_for_a_fresh_serving_install(serving_lock: ModuleType, tmp_path: Path) -> None:
    """What the images get (the lock, --no-deps) is what pip itself resolves for the project's base dependencies
    from nothing, constrained by the lock: no package missing from it, none in it that the serving install would
    not pull in. (The project's own requirements, given directly: nothing needs building.)"""
    report = tmp_path / "report.json"
    requirements = [str(r) for r in serving_lock.base_requirements()]
    assert any(r.startswith("onnxruntime-gpu") for r in requirements)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--only-binary=:all:",
            "-c",
            str(LOCK),
            "--report",
            str(report),
            *requirements,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
    locked = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            locked[canonicalize_name(name)] = version
    assert resolved == locked


def test_makefile_installs_every_environment_against_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [
        line.strip() for line in makefile.splitlines() if "$(PIP) install" in line and "--upgrade pip" not in line
    ]
    assert len(installs) >= 3
    assert all("-c $(LOCK)" in line for line in installs), installs
    assert "LOCK := requirements/serving.lock" in makefile
    assert '".[train,dev,deploy]"' in makefile
