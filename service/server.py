"""``triage serve``: assemble the LitServe application and run it under the supervisor.

Endpoints: ``POST /v1/route`` (``RouteAPI``), ``POST /v1/explain`` (``ExplainAPI``), ``GET /`` (the explanation
page, ``service.http.page``, in place of LitServe's own ``/`` and ``/info``), ``GET /v1/model``,
``GET /v1/model/report`` (the training report, ``service.http.report``), ``GET /health`` (LitServe's: 200 once every
worker of every API has loaded and warmed up the model, 503 before), ``GET /metrics``.
Another model endpoint is one more entry in ``build_apis``; it reuses ``EngineAPI`` (workers, engine, provider
report), ``shared_upload`` (request parsing, photos handed over in ``/dev/shm``), ``read_photo`` (intake), and
gets the request id, API key, limits, timeout and metrics from ``RequestContextMiddleware`` for free.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from typing import Any

import litserve as ls
import onnxruntime as ort
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from service.http.logs import configure_logging
from service.http.openapi import describe_api
from service.http.page import PAGE_PATH, add_page_routes
from service.http.report import REPORT_PATH, add_report_route
from service.http.request_context import RequestContextMiddleware
from service.http.uploads import UploadLimits
from service.inference.devices import DevicePlan, plan_devices, visible_gpus
from service.inference.engine import DeviceError, ModelIntegrityError, verified_card
from service.inference.engine_api import EngineAPI
from service.inference.explain_api import EXPLAIN_PATH, ExplainAPI
from service.inference.route_api import ROUTE_PATH, RouteAPI
from service.metrics import MULTIPROC_ENV, live_models, render, use_metrics_dir
from service.runtime.photo_handoff import CloseHandoffOnStop, PhotoHandoff
from service.runtime.supervisor import serve
from service.settings import Settings

log = logging.getLogger(__name__)

MODEL_PATH = "/v1/model"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"


def build_apis(settings: Settings, plan: DevicePlan) -> list[EngineAPI]:
    """The model endpoints; each gets its own inference workers."""
    engine = {"engine_device": "cpu" if plan.accelerator == "cpu" else settings.device, "gpus": tuple(visible_gpus())}
    return [RouteAPI(settings, **engine), ExplainAPI(settings, **engine)]


def preflight(settings: Settings) -> tuple[dict[str, Any], DevicePlan]:
    """Refuse to start, with a clear message, when the model or the requested device cannot possibly work.

    Checks the model file against the sha256 in its card (the workers' engines check again when they load it)
    and plans the devices; returns the card and the plan.
    """
    card, _ = verified_card(settings.model_path)
    return card, plan_devices(settings.device, ort.get_available_providers(), visible_gpus())


def _add_service_routes(app: FastAPI, card: dict[str, Any], model_sha256: str) -> None:
    async def model_info() -> JSONResponse:
        # The workers serving this model: a metrics folder shared with another service (tests run several in one
        # session) may also hold the workers of other models.
        live = [model for model in live_models() if model.get("sha256") == model_sha256]
        if not live:
            raise HTTPException(503, "the inference workers are still loading the model")
        return JSONResponse({**card, "provider": live[0]["provider"], "device": live[0]["device"], "serving": live})

    async def metrics_text() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    app.add_api_route(MODEL_PATH, model_info, methods=["GET"])
    app.add_api_route(METRICS_PATH, metrics_text, methods=["GET"])


def build_server(settings: Settings, card: dict[str, Any], plan: DevicePlan) -> ls.LitServer:
    """The LitServer with every endpoint and the request middleware; not started.

    Metrics must already be set up in this process (``service.metrics.use_metrics_dir``).
    """
    if not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError(f"set up metrics first (service.metrics.use_metrics_dir); {MULTIPROC_ENV} is not set")
    apis = build_apis(settings, plan)
    endpoints = {api.api_path for api in apis} | {MODEL_PATH, REPORT_PATH, HEALTH_PATH, METRICS_PATH, PAGE_PATH}
    middleware = (
        RequestContextMiddleware,
        {
            "api_key": settings.api_key.get_secret_value() if settings.api_key else None,
            "max_body_bytes": settings.max_request_bytes,
            "request_timeout": settings.request_timeout,
            "endpoints": endpoints,
        },
    )
    server = ls.LitServer(
        apis,
        accelerator=plan.accelerator,
        devices=plan.devices,
        workers_per_device={
            ROUTE_PATH: settings.workers_per_device,
            EXPLAIN_PATH: settings.explain_workers_per_device,
        },
        timeout=settings.request_timeout,
        max_payload_size=settings.max_request_bytes,
        middlewares=[middleware],
        healthcheck_path=HEALTH_PATH,
        callbacks=[CloseHandoffOnStop()],
    )
    server.app.state.upload_limits = UploadLimits(max_images=settings.max_images, max_bytes=settings.max_bytes)
    server.app.state.photo_handoff = PhotoHandoff(settings.handoff_dir)
    _add_service_routes(server.app, card, card["artifacts"][settings.model_path.name]["sha256"])
    add_report_route(server.app, card, settings.model_path.parent)
    add_page_routes(server.app)
    for api in apis:
        api.configure_app(server.app)
    describe_api(server.app, api_key=settings.api_key is not None, max_images=settings.max_images)
    return server


def main(host: str | None = None, port: int | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit status (non-zero if it cannot start)."""
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # Without the values: one of them may be the API key.
        problems = "\n".join(
            f"  TRIAGE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        print(f"triage serve: invalid configuration:\n{problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        card, plan = preflight(settings)
    except (DeviceError, ModelIntegrityError, OSError, ValueError, KeyError) as exc:
        log.error("cannot start: %s", exc)
        print(f"triage serve: cannot start: {exc}", file=sys.stderr)
        return 2
    metrics_dir, created = use_metrics_dir()
    log.info(
        "starting",
        extra={
            "model": str(settings.model_path),
            "device": settings.device,
            "accelerator": plan.accelerator,
            "providers": list(plan.providers),
            "metrics_dir": str(metrics_dir),
        },
    )
    try:
        return serve(build_server(settings, card, plan), settings)
    finally:
        if created:
            shutil.rmtree(metrics_dir, ignore_errors=True)
