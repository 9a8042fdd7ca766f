"""The deployment validators run for real: hadolint, kubectl kustomize, kubernetes-validate --strict, CRD models,
PromQL parsing and checkov, on the repository's files; and each is shown to catch a broken input."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

# Each suppression must be here and justified inline next to what it suppresses.
ALLOWED_SUPPRESSIONS = {"CKV_DOCKER_7", "CKV_K8S_35", "CKV_K8S_43"}


def test_hadolint_finds_nothing_in_the_dockerfile(validate: ModuleType) -> None:
    assert "Haskell Dockerfile Linter" in validate.hadolint_version()
    assert validate.hadolint() == []


def test_hadolint_does_flag_a_careless_dockerfile(validate: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python -m http.server\n")
    codes = {f["code"] for f in validate.hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3025"} <= codes


def test_every_target_renders_into_one_namespace(
    rendered: dict[str, list[dict[str, Any]]], validate: ModuleType
) -> None:
    assert set(rendered) == {t.name for t in validate.TARGETS}
    for name, docs in rendered.items():
        kinds = [d["kind"] for d in docs]
        assert kinds.count("Deployment") == 1, name
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == validate.NAMESPACE, (name, doc["kind"])


def test_kubernetes_validate_strict_passes_every_builtin_object(
    validate: ModuleType, rendered_files: dict[str, Path], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    report = validate.check_schemas(rendered_files)
    assert report.failed == []
    builtin = sum(1 for docs in rendered.values() for d in docs if not validate.is_custom(d))
    assert len(report.passed) == builtin > 0
    custom = sum(1 for docs in rendered.values() for d in docs if validate.is_custom(d))
    assert len(report.custom) == custom == 6  # ScaledObject, ServiceMonitor, PrometheusRule in both overlays
    assert report.expressions >= 2 * 8


def test_kubernetes_validate_strict_rejects_an_unknown_field(
    validate: ModuleType, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    deployment = next(d for d in rendered["cpu"] if d["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    code, other, _ = validate.kubernetes_validate([path])
    assert code != 0
    assert any("replica" in line for line in other)


def test_custom_resources_are_checked_field_by_field(
    validate: ModuleType, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered["gpu+keda+servicemonitor+prometheusrule"]
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert validate.validate_custom(scaled) == []
    misspelled = {**scaled, "spec": {**scaled["spec"], "minReplicas": 2}}
    assert any("minReplicas" in p for p in validate.validate_custom(misspelled))
    wrong_type = {**scaled, "spec": {**scaled["spec"], "maxReplicaCount": "many"}}
    assert validate.validate_custom(wrong_type)
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    endpoint = {**monitor["spec"]["endpoints"][0], "honourLabels": True}
    typo = {**monitor, "spec": {**monitor["spec"], "endpoints": [endpoint]}}
    assert any("honourLabels" in p for p in validate.validate_custom(typo))


def test_promql_parser_rejects_a_broken_expression(validate: ModuleType) -> None:
    assert validate.selectors('sum(rate(triage_queue_seconds_sum{namespace="x"}[2m]))') == [
        ("triage_queue_seconds_sum", {"namespace": "x"})
    ]
    with pytest.raises(ValueError):
        validate.parse_promql("sum(rate(triage_queue_seconds_sum[2m])")


def test_checkov_fails_nothing_and_every_suppression_is_justified(
    validate: ModuleType, rendered_files: dict[str, Path]
) -> None:
    reports = validate.checkov_all(rendered_files)
    assert set(reports) == {"Dockerfile", *rendered_files}
    for name, report in reports.items():
        assert report.failed == [], name
        assert report.summary["parsing_errors"] == 0, name
        assert report.summary["passed"] > 50, name
        for check_id, resource, why in report.skipped:
            assert check_id in ALLOWED_SUPPRESSIONS, (name, check_id, resource)
            assert len(why) > 40, f"{check_id} on {resource} is suppressed without a reason"
    assert {s[0] for s in reports["Dockerfile"].skipped} == {"CKV_DOCKER_7"}
    assert {s[0] for s in reports["cpu"].skipped} == {"CKV_K8S_35", "CKV_K8S_43"}
    # The deployment of every variant is scanned, components included.
    for name in rendered_files:
        assert reports[name].summary["resource_count"] >= 9, name


def test_checkov_does_flag_a_privileged_pod(validate: ModuleType, tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "ticket-triage"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.37", "securityContext": {"privileged": True}}]},
    }
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    failed = " ".join(validate.checkov("kubernetes", [path]).failed)
    for check in ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_37"):
        assert check in failed


def test_the_command_line_prints_counts_and_succeeds(validate: ModuleType) -> None:
    lines: list[str] = []
    assert validate.main([], out=lines.append) == 0
    text = "\n".join(lines)
    assert "hadolint" in text and "0 finding(s)" in text
    assert "kubernetes-validate --strict (newest and 1.30.0): " in text and "failures: 0" in text
    assert text.count("failed 0,") == 1 + len(validate.TARGETS)
    assert lines[-1] == "deployment files: OK"
