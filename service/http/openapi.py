"""The OpenAPI description served at ``GET /openapi.json`` (and drawn at ``/docs``): what each endpoint really takes
and answers.

LitServe's model endpoints read the request themselves and every route answers with a plain ``Response``, so
FastAPI on its own describes each operation as taking nothing and answering "anything, as JSON" — wrong for
``/health`` and ``/metrics`` (plain text) and useless to clients and API fuzzers. ``describe_api`` replaces those
operations with the real contract: both request forms of ``/v1/route`` and ``/v1/explain`` and their limits, the
explanation options, every documented status with its body, the ``X-Request-ID`` every ``/v1/*`` answer carries,
and the API key when one is configured. Only paths the app really serves are described.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.explain.options import DEFAULT_CHANNELS, DEPRECATED_FORMATS, MAPS, MAX_CHANNELS
from service.http.api_schemas import Schema, body_schemas, ref
from service.http.report import REPORT_PATH
from service.inference.explain_api import EXPLAIN_PATH
from service.inference.route_api import ROUTE_PATH

MODEL_PATH = "/v1/model"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"


def _json(schema: Schema, description: str, *, request_id: bool = True) -> Schema:
    answer: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if request_id:
        answer["headers"] = {"X-Request-ID": {"required": True, "schema": {"type": "string"}}}
    return answer


def _photos_body(most: int, what: str) -> Schema:
    files = {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": most}
    images = {
        "type": "array",
        "items": {"type": "string", "description": "a base64-encoded image file; a data: URI prefix is accepted"},
        "minItems": 1,
        "maxItems": most,
    }
    return {
        "required": True,
        "description": f"{what} (JPEG, PNG, WebP or HEIC/HEIF; the type is read from the bytes)",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": files}, "required": ["file"]},
            },
            "application/json": {
                "schema": {"type": "object", "properties": {"images": images}, "required": ["images"]},
            },
        },
    }


def _errors(*statuses: int) -> Schema:
    reasons = {
        400: "malformed request",
        401: "missing or wrong API key",
        413: "too many bytes, pixels or photos",
        415: "not a supported image type, or a body that is neither multipart/form-data nor JSON, or is compressed",
        404: "the model has no training report that matches its card",
        422: "an image that cannot be decoded",
        503: "not now, retry after Retry-After: the model is still loading, the endpoint's queue is full, an inference"
        " worker was lost with the request, or the service is shutting down",
        408: "the request body had not all arrived within the request timeout",
        504: "no answer within the request timeout",
    }
    return {str(s): _json(ref("Error"), reasons[s]) for s in statuses}


def _operations(max_images: int, layers: Sequence[str] | None) -> dict[str, Schema]:
    photo_errors = _errors(400, 401, 408, 413, 415, 422, 503, 504)
    layer_items: Schema = {"type": "string", "enum": list(layers)} if layers else {"type": "string", "minLength": 1}
    explain_options = [
        {
            "name": "layers",
            "in": "query",
            "description": "stages to explain (comma-separated; repeats are ignored); default: all",
            "style": "form",
            "explode": False,
            "schema": {"type": "array", "items": layer_items, "minItems": 1},
        },
        {
            "name": "channels",
            "in": "query",
            "description": "top channels per stage",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CHANNELS, "default": DEFAULT_CHANNELS},
        },
        {
            "name": "maps",
            "in": "query",
            "description": "how feature maps travel inside the JSON answer: base64 PNG pictures (with the "
            "class-activation overlay), arrays of numbers, or both",
            "schema": {"type": "string", "enum": list(MAPS), "default": "png"},
        },
        {
            "name": "format",
            "in": "query",
            "deprecated": True,
            "description": "the older name of maps: png is maps=png, json is maps=array (the answer is JSON either "
            "way); not together with maps",
            "schema": {"type": "string", "enum": list(DEPRECATED_FORMATS)},
        },
        {
            "name": "erf",
            "in": "query",
            "description": "add effective receptive fields (any letter case; an empty value is false)",
            "schema": {
                "anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["1", "0", "yes", "no", "on", "off", ""]}],
                "default": False,
            },
        },
    ]
    return {
        ROUTE_PATH: {
            "post": {
                "summary": "Route a ticket's photos",
                "operationId": "route_ticket",
                "requestBody": _photos_body(max_images, f"the ticket's photos, at most {max_images}"),
                "responses": {
                    "200": _json(ref("RouteAnswer"), "routed; a photo that could not be read carries its error"),
                    **photo_errors,
                },
            }
        },
        EXPLAIN_PATH: {
            "post": {
                "summary": "Explain one photo's route",
                "operationId": "explain_photo",
                "parameters": explain_options,
                "requestBody": _photos_body(1, "exactly one photo"),
                "responses": {"200": _json(ref("ExplainAnswer"), "the explanation"), **photo_errors},
            }
        },
        MODEL_PATH: {
            "get": {
                "summary": "The model card and the live execution provider",
                "operationId": "model_info",
                "responses": {"200": _json(ref("ModelInfo"), "the model being served"), **_errors(401, 503, 504)},
            }
        },
        REPORT_PATH: {
            "get": {
                "summary": "The served model's training report: one self-contained HTML page",
                "operationId": "model_report",
                "responses": {
                    "200": {
                        "description": "curves, confusion, reliability, coverage and the photos the model gets wrong",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 404, 504),
                },
            }
        },
        HEALTH_PATH: {
            "get": {
                "summary": "Readiness: 200 once every inference worker has loaded and warmed up the model",
                "operationId": "health",
                "responses": {"200": {"description": "ready (body: ok)"}, "503": {"description": "not ready"}},
            }
        },
        METRICS_PATH: {
            "get": {
                "summary": "Prometheus metrics, summed over every process",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def openapi_schema(
    app: FastAPI, *, api_key: bool, max_images: int, layers: Sequence[str] | None = None
) -> dict[str, Any]:
    """The app's OpenAPI document with the service's operations described as they really are."""
    schema = get_openapi(title="Ticket-photo triage", version=app.version, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(body_schemas(max_images))
    protected = {ROUTE_PATH, EXPLAIN_PATH, MODEL_PATH, REPORT_PATH}
    if api_key:
        schema["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
    for path, operations in _operations(max_images, layers).items():
        if path not in schema["paths"]:
            continue
        for method, operation in operations.items():
            if api_key and path in protected:
                operation = {**operation, "security": [{"ApiKey": []}, {"Bearer": []}]}
            elif not api_key:
                operation = {**operation, "responses": {k: v for k, v in operation["responses"].items() if k != "401"}}
            schema["paths"][path][method] = operation
    return schema


def describe_api(app: FastAPI, *, api_key: bool, max_images: int) -> None:
    """Serve ``openapi_schema`` at ``/openapi.json``; call once every route is registered."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            layers = getattr(app.state, "explain_layers", None)
            cached.update(openapi_schema(app, api_key=api_key, max_images=max_images, layers=layers))
        return copy.deepcopy(cached)

    app.openapi = openapi  # type: ignore[method-assign]
