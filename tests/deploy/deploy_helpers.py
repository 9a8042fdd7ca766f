"""Helpers for reading rendered manifests in the deployment tests."""

from __future__ import annotations

from typing import Any


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of ``kind`` in ``docs``."""
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The service's container in a rendering's Deployment."""
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["triage"]
    return containers[0]


def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the service container gets from its ConfigMap."""
    return dict(only(docs, "ConfigMap")["data"])
