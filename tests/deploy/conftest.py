"""Fixtures for the deployment tests: the validators of deploy/validate.py and every rendered variant."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def validate() -> ModuleType:
    """deploy/validate.py as a module."""
    return _load("deploy_validate", ROOT / "deploy" / "validate.py")


@pytest.fixture(scope="session")
def serving_lock() -> ModuleType:
    """deploy/serving_lock.py as a module."""
    return _load("deploy_serving_lock", ROOT / "deploy" / "serving_lock.py")


@pytest.fixture(scope="session")
def rendered_files(validate: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every target of deploy/validate.py rendered by ``kubectl kustomize``: name -> file."""
    return validate.render_all(tmp_path_factory.mktemp("rendered"))


@pytest.fixture(scope="session")
def rendered(validate: ModuleType, rendered_files: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Every target's objects: name -> parsed documents."""
    return {name: validate.documents(path.read_text()) for name, path in rendered_files.items()}
