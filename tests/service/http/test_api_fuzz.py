"""Schemathesis against a real ``triage serve``: requests generated from the service's own OpenAPI description
(``service/http/openapi.py``), answered without a 5xx and exactly as that description says.

Every operation is fuzzed with schema-conforming requests ("positive") and, where it takes input, with requests
that break the schema ("negative"). A positive request's photos are whatever bytes the generator made, which no
decoder accepts, so Hypothesis also decides whether a real photo takes the first slot: that way 200 answers, mixed
tickets and every explanation option are checked against the schema too. Generation is derandomised, so a run is
repeatable and bounded: about 1,500 requests in well under three minutes on two cores.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.http.openapi import openapi_schema
from tests.service.serve_process import Served, serving

KEY = "fuzz-key"
MAX_BYTES = 1024 * 1024
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, ignored_auth],
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}
# Schema-breaking requests must be refused with one of the documented 4xx (413: too many photos).
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 413, 415, 422]}}}
)
# (operation, mode) -> (examples asked of Hypothesis, fewest requests that must really have been sent). Operations
# without inputs have a single possible request, sent once.
PLAN: dict[tuple[str, GenerationMode], tuple[int, int]] = {
    ("POST /v1/route", GenerationMode.POSITIVE): (450, 400),
    ("POST /v1/route", GenerationMode.NEGATIVE): (300, 250),
    ("POST /v1/explain", GenerationMode.POSITIVE): (450, 400),
    ("POST /v1/explain", GenerationMode.NEGATIVE): (300, 250),
    ("GET /v1/model", GenerationMode.POSITIVE): (5, 1),
    ("GET /v1/model/report", GenerationMode.POSITIVE): (5, 1),
    ("GET /health", GenerationMode.POSITIVE): (5, 1),
    ("GET /metrics", GenerationMode.POSITIVE): (5, 1),
}


@dataclass
class Fuzz:
    served: Served
    schema: Any
    session: requests.Session
    photos: list[bytes]


@pytest.fixture(scope="module")
def fuzz(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]) -> Iterator[Fuzz]:
    with serving(
        random_model_dir / "triage.onnx",
        tmp_path_factory.mktemp("fuzz") / "serve.log",
        TRIAGE_API_KEY=KEY,
        TRIAGE_MAX_BYTES=str(MAX_BYTES),
        TRIAGE_LOG_LEVEL="warning",
    ) as served:
        schema = schemathesis.openapi.from_url(served.url + "/openapi.json", config=CONFIG)
        with requests.Session() as session:
            yield Fuzz(served, schema, session, [photos[name] for name in ("jpeg", "png", "webp", "heic")])


def splice(body: Any, photo: bytes) -> Any:
    """``body`` with a real photo in its first slot (multipart ``file`` or JSON ``images``), when it has one."""
    if isinstance(body, dict) and isinstance(body.get("file"), list) and body["file"]:
        return {**body, "file": [photo, *body["file"][1:]]}
    if isinstance(body, dict) and isinstance(body.get("images"), list) and body["images"]:
        return {**body, "images": [base64.b64encode(photo).decode(), *body["images"][1:]]}
    return body


def fuzz_operation(fuzz: Fuzz, label: str, mode: GenerationMode, examples: int) -> tuple[int, dict[int, int]]:
    """Run ``examples`` generated cases; returns how many requests were sent and how many got each status."""
    operation = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in fuzz.schema.get_all_operations())}
    strategy = operation[label].as_strategy(generation_mode=mode)
    real_photo = st.none() if mode == GenerationMode.NEGATIVE else st.one_of(st.none(), st.sampled_from(fuzz.photos))
    statuses: dict[int, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, photo=real_photo)
    def run(case: Any, photo: bytes | None) -> None:
        if photo is not None:
            case.body = splice(case.body, photo)
        response = case.call_and_validate(
            base_url=fuzz.served.url, session=fuzz.session, headers={"X-API-Key": KEY}, checks=CHECKS[mode]
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    run()
    return sum(statuses.values()), statuses


def test_schema_describes_every_endpoint(fuzz: Fuzz) -> None:
    document = fuzz.schema.raw_schema
    labels = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in fuzz.schema.get_all_operations())}
    assert labels == {label for label, _ in PLAN}
    route = document["paths"]["/v1/route"]["post"]
    assert set(route["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "400", "401", "413", "415", "422"} <= set(route["responses"])
    assert route["security"] == [{"ApiKey": []}, {"Bearer": []}]
    explain = document["paths"]["/v1/explain"]["post"]
    parameters = {p["name"]: p for p in explain["parameters"]}
    assert set(parameters) == {"layers", "channels", "maps", "format", "erf"}
    assert parameters["maps"]["schema"] == {"type": "string", "enum": ["png", "array", "both"], "default": "png"}
    assert parameters["format"]["deprecated"] is True and "maps" in parameters["format"]["description"]


@pytest.mark.parametrize(("label", "mode"), list(PLAN), ids=[f"{label} {mode.value}" for label, mode in PLAN])
def test_generated_requests_get_documented_answers(fuzz: Fuzz, label: str, mode: GenerationMode) -> None:
    examples, fewest = PLAN[label, mode]
    sent, statuses = fuzz_operation(fuzz, label, mode, examples)
    print(f"{label} {mode.value}: {sent} requests, statuses {dict(sorted(statuses.items()))}")
    assert sent >= fewest, statuses
    assert all(status < 500 for status in statuses)
    if label.startswith("POST") and mode == GenerationMode.POSITIVE:
        assert statuses.get(200, 0) >= fewest // 5, statuses  # real photos got through and were checked
    assert fuzz.served.proc.poll() is None


def test_plan_sends_at_least_1000_requests() -> None:
    assert sum(fewest for _, fewest in PLAN.values()) >= 1000


def test_without_a_key_the_description_asks_for_no_credentials() -> None:
    app = FastAPI()
    for path in ("/v1/route", "/v1/explain"):
        app.add_api_route(path, lambda: None, methods=["POST"])
    app.add_api_route("/v1/model", lambda: None, methods=["GET"])
    schema = openapi_schema(app, api_key=False, max_images=3, layers=("stage1", "stage2"))
    assert set(schema["paths"]) == {"/v1/route", "/v1/explain", "/v1/model"}  # only what the app serves
    assert "securitySchemes" not in schema["components"]
    route = schema["paths"]["/v1/route"]["post"]
    assert "security" not in route and "401" not in route["responses"]
    assert route["requestBody"]["content"]["application/json"]["schema"]["properties"]["images"]["maxItems"] == 3
    layers = schema["paths"]["/v1/explain"]["post"]["parameters"][0]
    assert layers["name"] == "layers" and layers["schema"]["items"]["enum"] == ["stage1", "stage2"]
