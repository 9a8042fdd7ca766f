"""How the container smoke test is wired: CI runs it for both targets after the tests, installing podman and what it
needs first, and the stand-in base is rebuilt exactly when its recipe changes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def standin_base(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_standin_base", ROOT / "deploy" / "standin_base.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "deploy_standin_base", module)
    spec.loader.exec_module(module)
    return module


def test_ci_installs_podman_then_smoke_tests_both_targets_after_make_test() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    make_test = next(i for i, line in enumerate(lines) if "make test" in line and not line.startswith("#"))
    cpu = lines.index(".venv/bin/python deploy/container_smoke.py --target cpu")
    gpu = next(
        i for i, line in enumerate(lines) if line.startswith(".venv/bin/python deploy/container_smoke.py --target gpu")
    )
    assert make_test < cpu < gpu
    tools = next(line for line in lines if line.startswith("container_tools="))
    for package in ("podman", "runc", "netavark", "aardvark-dns", "iptables", "debootstrap"):
        assert package in tools.split("=", 1)[1].strip('"').split(), package
    # No silent skip: nothing between the tests and the smoke runs tolerates a failure.
    assert "set -euo pipefail" in lines
    assert not any("|| true" in line for line in lines[make_test:])


def test_the_base_tag_follows_the_recipe(standin_base: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = standin_base.recipe_tag()
    assert len(tag) == 12 and int(tag, 16) >= 0
    assert standin_base.recipe_tag() == tag
    assert standin_base.image_name() == f"{standin_base.REPOSITORY}:{tag}"
    packages = standin_base.PACKAGES
    monkeypatch.setattr(standin_base, "PACKAGES", (*packages, "curl"))
    assert standin_base.recipe_tag() != tag
    monkeypatch.setattr(standin_base, "PACKAGES", packages)
    assert standin_base.recipe_tag() == tag
    monkeypatch.setattr(standin_base, "SUITE", "trixie")
    assert standin_base.recipe_tag() != tag


def test_the_mirror_is_not_part_of_the_recipe(standin_base: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    tag = standin_base.recipe_tag()
    monkeypatch.setattr(standin_base, "MIRROR", "http://mirror.example/debian")
    assert standin_base.recipe_tag() == tag
