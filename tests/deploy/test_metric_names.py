"""Every PromQL expression shipped with the deployment (KEDA triggers, alert rules, docs/DEPLOY.md) parses and asks
only for series the service really exports, with labels those series really carry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.inference.engine import CPU, CUDA
from service.inference.route_api import ROUTE_PATH
from service.server import HEALTH_PATH, METRICS_PATH, MODEL_PATH

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "DEPLOY.md"
# Labels that scraping attaches (ServiceMonitor/kubernetes-pods job, podTargetLabels) and the histogram bucket label.
SCRAPE_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "app_kubernetes_io_variant"}
METRIC_LABELS = {"le"}

# Creates each of the service's metrics in the scratch multiprocess directory argv[1], records one sample of each
# (labelled ones with placeholder label values) and prints sample name -> label names of what /metrics would serve.
_EXPORT = """
import dataclasses, json, sys
from pathlib import Path
from prometheus_client.parser import text_string_to_metric_families
from service.metrics import metrics, render, use_metrics_dir

use_metrics_dir(Path(sys.argv[1]))
m = metrics()
for f in dataclasses.fields(m):
    metric = getattr(m, f.name)
    names = metric._labelnames
    child = metric.labels(*["x"] * len(names)) if names else metric
    for method, arg in (("observe", 0.7), ("set", 1), ("inc", 1)):
        if hasattr(child, method):
            getattr(child, method)(arg)
            break
body, _ = render()
out = {}
for family in text_string_to_metric_families(body.decode()):
    for sample in family.samples:
        out.setdefault(sample.name, set()).update(sample.labels)
json.dump({k: sorted(v) for k, v in out.items()}, sys.stdout)
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample name -> label names, as the service's /metrics serves them (in a separate process: metrics set-up
    changes process-wide state; its multiprocess directory is one of pytest's, removed with them)."""
    scratch = tmp_path_factory.mktemp("metric_names")
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT, str(scratch)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=True
    )
    return {name: set(labels) for name, labels in json.loads(proc.stdout).items()}


def docs_expressions() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", DOCS.read_text(), re.S)


@pytest.fixture(scope="module")
def expressions(validate: ModuleType, rendered: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Where -> PromQL, from every rendered custom resource and from docs/DEPLOY.md."""
    found = {}
    for target in ("cpu+keda+servicemonitor+prometheusrule", "gpu+keda+servicemonitor+prometheusrule"):
        for doc in rendered[target]:
            for i, expression in enumerate(validate.promql_expressions(doc)):
                found[f"{doc['kind']}[{i}]"] = expression
    for i, expression in enumerate(docs_expressions()):
        found[f"docs/DEPLOY.md[{i}]"] = expression
    return found


def test_export_covers_the_metrics_the_deployment_relies_on(exported: dict[str, set[str]]) -> None:
    for name in ("triage_http_requests_total", "triage_request_seconds_bucket", "triage_queue_seconds_sum"):
        assert name in exported
    assert exported["triage_model"] >= {"provider", "device", "sha256"}
    assert "pid" not in exported["triage_model"]  # summed over processes, not one series per worker


def test_every_expression_uses_real_series_and_labels(
    validate: ModuleType, expressions: dict[str, str], exported: dict[str, set[str]]
) -> None:
    assert len(expressions) >= 8 + 4  # KEDA and alert rules, plus the docs' own examples
    used = set()
    for where, expression in expressions.items():
        for name, matchers in validate.selectors(expression):
            if not name.startswith("triage_"):
                continue
            used.add(name)
            assert name in exported, f"{where}: {name} is not exported; the service has {sorted(exported)}"
            unknown = set(matchers) - exported[name] - SCRAPE_LABELS - METRIC_LABELS
            assert not unknown, f"{where}: {name} has no label {unknown}"
            if "endpoint" in matchers:
                assert matchers["endpoint"] in {ROUTE_PATH, MODEL_PATH, HEALTH_PATH, METRICS_PATH}, where
            if "provider" in matchers:
                assert matchers["provider"] in {CUDA, CPU}, where
    # Each signal the docs promise is covered: errors, latency, queue, provider, confidence, routes.
    for name in (
        "triage_http_requests_total",
        "triage_request_seconds_bucket",
        "triage_request_seconds_sum",
        "triage_queue_seconds_sum",
        "triage_model",
        "triage_confidence_sum",
        "triage_routes_total",
    ):
        assert name in used, name


def test_label_values_for_routes_are_the_contract_routes(expressions: dict[str, str], validate: ModuleType) -> None:
    routes = {"screen_damage", "general_returns", "needs_review"}
    for where, expression in expressions.items():
        for name, matchers in validate.selectors(expression):
            if name == "triage_routes_total":
                assert matchers.get("level") in {"photo", "ticket"}, where
                assert matchers.get("route", "needs_review") in routes, where


def test_docs_expressions_parse(validate: ModuleType) -> None:
    found = docs_expressions()
    assert len(found) >= 4
    for expression in found:
        validate.parse_promql(expression)
