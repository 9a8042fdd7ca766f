"""``POST /v1/explain``: one photo -> its route and what the served model computed to get there.

The same intake, limits, API key, request ids, timeout and metrics as ``/v1/route`` (``receive_upload`` with the
photo hand-off, ``read_photo``, ``RequestContextMiddleware``), and the same ONNX session: the feature maps are the
model's own named stage outputs. Options (``layers``, ``channels``, ``format``, ``erf``) are checked in the HTTP
server before the request is queued (400 naming what is valid). Concurrent requests share one batched model run;
nothing a single request brings can fail the others: a bad photo is that request's own 413/415/422, and an
unexpected error while drawing one explanation is that request's own 500 (a bug, logged with its traceback).
"""

# No ``from __future__ import annotations``: LitServe hands decode_request's annotation to FastAPI at runtime.

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from model.config import LOGITS_NAME
from model.familiarity import UNFAMILIARITY_NAME
from model.preprocess import Prepared
from service.explain.explainer import Explainer
from service.explain.onnx_weights import read_onnx
from service.explain.options import ExplainOptions, OptionError, parse_options
from service.explain.pictures import for_display
from service.http.uploads import TicketUpload, receive_upload, reject
from service.inference.engine_api import EngineAPI, milliseconds
from service.inference.intake import IntakeError, read_photo
from service.inference.routing import Decision
from service.metrics import metrics
from service.runtime.photo_handoff import handoff_of
from service.settings import Settings

log = logging.getLogger(__name__)

EXPLAIN_PATH = "/v1/explain"


@dataclass(frozen=True)
class ExplainUpload:
    upload: TicketUpload
    options: ExplainOptions


async def read_explain(request: Request) -> AsyncIterator[ExplainUpload]:
    """FastAPI dependency: the options (400 if malformed) and exactly one photo (400 otherwise), handed over to the
    worker until the request is answered (``service.runtime.photo_handoff``)."""
    try:
        options = parse_options(request.query_params, getattr(request.app.state, "explain_layers", None))
    except OptionError as exc:
        raise reject(request, 400, "bad_option", str(exc)) from exc
    handoff = handoff_of(request)
    upload = await receive_upload(request, handoff.new_writer)
    async with handoff.shared(upload) as shared:
        if len(shared.photos) != 1:
            count = len(shared.photos)
            raise reject(request, 400, "malformed_request", f"send exactly one photo to explain, not {count}")
        yield ExplainUpload(shared, options)


@dataclass(frozen=True)
class DecodedPhoto:
    request: ExplainUpload
    item: Prepared | IntakeError
    timings: dict[str, float]


@dataclass(frozen=True)
class Explained:
    request: ExplainUpload
    body: dict[str, Any] | None
    error: IntakeError | OptionError | None
    timings: dict[str, float]


class ExplainAPI(EngineAPI):
    """Explains one photo per request; the model runs once per batch of concurrent requests."""

    def __init__(self, settings: Settings, **engine: Any) -> None:
        super().__init__(
            settings,
            api_path=EXPLAIN_PATH,
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.batch_timeout,
            **engine,
        )
        graph_outputs = read_onnx(settings.model_path).outputs
        self.layer_names = tuple(name for name in graph_outputs if name not in (LOGITS_NAME, UNFAMILIARITY_NAME))
        self._explainer: Explainer | None = None

    def configure_app(self, app: FastAPI) -> None:
        app.state.explain_layers = self.layer_names

    def setup(self, device: str) -> None:
        super().setup(device)
        self._explainer = Explainer.from_onnx(self.settings.model_path)

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            raise RuntimeError("ExplainAPI has no explainer outside an inference worker")
        return self._explainer

    def decode_request(self, request: Annotated[ExplainUpload, Depends(read_explain)]) -> DecodedPhoto:
        started = time.time()
        queue_seconds = max(0.0, started - request.upload.received_at)
        metrics().queue_latency.observe(queue_seconds)
        photo = request.upload.photos[0]
        t0 = time.perf_counter()
        error = photo.error
        timings = {"queue": queue_seconds}
        if error is None:
            try:
                prepared, read = read_photo(photo.read(), self.engine.preprocessing, self.settings.intake_limits)
                prepared = replace(prepared, photo=for_display(prepared.photo))
                metrics().decode_latency.observe(time.perf_counter() - t0)
                return DecodedPhoto(request, prepared, {**timings, **read})
            except IntakeError as exc:
                error = exc
        metrics().errors.labels(reason=error.reason).inc()
        log.info(
            "photo rejected",
            extra={"request_id": request.upload.request_id, "status": error.status, "reason": error.reason},
        )
        return DecodedPhoto(request, error, timings)

    def run_batch(self, photos: list[DecodedPhoto]) -> list[Explained]:
        ready = [i for i, p in enumerate(photos) if isinstance(p.item, Prepared)]
        results = [Explained(p.request, None, p.item, p.timings) for p in photos]  # errors unless replaced
        if ready:
            t0 = time.perf_counter()
            outputs = self.engine.infer(np.stack([photos[i].item.tensor for i in ready]), self.engine.output_names)
            seconds = time.perf_counter() - t0
            metrics().inference_latency.observe(seconds)
            metrics().batch_photos.observe(len(ready))
            decisions = self.engine.decisions(outputs)
            for row, i in enumerate(ready):
                own = {name: value[row] for name, value in outputs.items()}
                results[i] = self._one(photos[i], own, decisions[row], seconds)
        metrics().batch_requests.observe(len(photos))
        return results

    def _one(self, photo: DecodedPhoto, outputs: dict[str, np.ndarray], decision: Decision, secs: float) -> Explained:
        t0 = time.perf_counter()
        timings = {**photo.timings, "inference": secs}
        assert isinstance(photo.item, Prepared)
        try:
            body = self.explainer.explain(photo.item, outputs, decision, photo.request.options)
        except OptionError as exc:
            return Explained(photo.request, None, exc, timings)
        except Exception:  # a bug: this request alone answers 500, its batch-mates are unaffected
            log.exception("explaining a photo failed", extra={"request_id": photo.request.upload.request_id})
            return Explained(photo.request, None, None, timings)
        return Explained(photo.request, body, None, {**timings, "explain": time.perf_counter() - t0})

    def encode_response(self, output: Explained) -> Response:
        upload = output.request.upload
        if output.body is None:
            if output.error is None:
                return JSONResponse({"detail": "internal error while explaining this photo"}, status_code=500)
            status = output.error.status
            message = output.error.message if isinstance(output.error, IntakeError) else str(output.error)
            return JSONResponse({"detail": message, "request_id": upload.request_id}, status_code=status)
        name = upload.photos[0].name
        body = {
            **({} if name is None else {"file": name}),
            **output.body,
            "review_threshold": self.engine.threshold,
            **self.engine.provenance(),
            "request_id": upload.request_id,
            "timings_ms": {k: milliseconds(v) for k, v in output.timings.items()},
        }
        return JSONResponse(body)
