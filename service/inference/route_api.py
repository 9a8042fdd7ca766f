"""``POST /v1/route``: a ticket's photos -> a route per photo and one for the ticket.

Errors stay with the photo they belong to. LitServe fails a whole batch when any hook raises, so no hook raises
for a bad photo: ``decode_request`` turns each photo into its network input (only that: a decoded 50-megapixel
PNG is 150 MB, and a batch holds up to ``max_batch_size`` tickets of 10 photos) or an ``IntakeError``;
``predict`` runs the model once over every readable photo of every request in the batch; ``encode_response``
gives each request its own answer. A ticket with at least one routed photo is 200, its unreadable photos carrying
``{"error": {"status", "message"}}``; a ticket none of whose photos could be read is answered with the status of
its first photo's error and ``{"detail", "images"}``. Exceptions that do escape are bugs and surface as 500.
"""

# No ``from __future__ import annotations`` here: LitServe reads decode_request's annotation at runtime and hands
# it to FastAPI, which needs the real ``Annotated[..., Depends(...)]`` object.

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import Depends
from fastapi.responses import JSONResponse, Response

from service.http.uploads import TicketUpload
from service.inference.engine_api import EngineAPI, milliseconds
from service.inference.intake import IntakeError, read_photo
from service.inference.routing import Decision, ticket_decision
from service.metrics import metrics
from service.runtime.photo_handoff import shared_upload
from service.settings import Settings

log = logging.getLogger(__name__)

ROUTE_PATH = "/v1/route"


@dataclass(frozen=True)
class DecodedTicket:
    upload: TicketUpload
    items: tuple[np.ndarray | IntakeError, ...]  # a photo's ``float32 (3, S, S)`` network input, or why it has none
    timings: dict[str, float]


@dataclass(frozen=True)
class RoutedTicket:
    ticket: DecodedTicket
    decisions: tuple[Decision | None, ...]
    inference_seconds: float


class RouteAPI(EngineAPI):
    """Routes tickets, batching the photos of concurrent requests into one model run."""

    def __init__(self, settings: Settings, **engine: Any) -> None:
        super().__init__(
            settings,
            api_path=ROUTE_PATH,
            max_batch_size=settings.max_batch_size,
            batch_timeout=settings.batch_timeout,
            **engine,
        )

    def decode_request(self, request: Annotated[TicketUpload, Depends(shared_upload)]) -> DecodedTicket:
        started = time.time()
        queue_seconds = max(0.0, started - request.received_at)
        metrics().queue_latency.observe(queue_seconds)
        items: list[np.ndarray | IntakeError] = []
        decode = preprocess = 0.0
        for photo in request.photos:
            t0 = time.perf_counter()
            error = photo.error
            if error is None:
                try:
                    prepared, timings = read_photo(photo.read(), self.engine.preprocessing, self.settings.intake_limits)
                except IntakeError as exc:
                    error = exc
            if error is not None:
                metrics().errors.labels(reason=error.reason).inc()
                log.info(
                    "photo rejected",
                    extra={
                        "request_id": request.request_id,
                        "file": photo.name,
                        "status": error.status,
                        "reason": error.reason,
                    },
                )
                items.append(error)
                continue
            metrics().decode_latency.observe(time.perf_counter() - t0)
            decode += timings["decode"]
            preprocess += timings["preprocess"]
            items.append(prepared.tensor)
        return DecodedTicket(
            request, tuple(items), {"queue": queue_seconds, "decode": decode, "preprocess": preprocess}
        )

    def run_batch(self, tickets: list[DecodedTicket]) -> list[RoutedTicket]:
        where = [
            (t, p)
            for t, ticket in enumerate(tickets)
            for p, item in enumerate(ticket.items)
            if isinstance(item, np.ndarray)
        ]
        decisions: list[list[Decision | None]] = [[None] * len(ticket.items) for ticket in tickets]
        seconds = 0.0
        if where:
            batch = np.stack([tickets[t].items[p] for t, p in where])
            t0 = time.perf_counter()
            outputs = self.engine.infer(batch, self.engine.route_outputs)
            seconds = time.perf_counter() - t0
            for (t, p), decision in zip(where, self.engine.decisions(outputs), strict=True):
                decisions[t][p] = decision
            m = metrics()
            m.inference_latency.observe(seconds)
            m.batch_photos.observe(len(where))
        metrics().batch_requests.observe(len(tickets))
        return [RoutedTicket(ticket, tuple(d), seconds) for ticket, d in zip(tickets, decisions, strict=True)]

    def encode_response(self, output: RoutedTicket) -> Response:
        m = metrics()
        upload = output.ticket.upload
        images: list[dict[str, Any]] = []
        for photo, item, decision in zip(upload.photos, output.ticket.items, output.decisions, strict=True):
            entry: dict[str, Any] = {} if photo.name is None else {"file": photo.name}
            if decision is not None:
                entry.update(decision.to_dict())
                m.routes.labels(level="photo", route=decision.route).inc()
                if decision.reason is not None:
                    m.review_reasons.labels(reason=decision.reason).inc()
                m.confidence.observe(decision.confidence)
            elif isinstance(item, IntakeError):
                entry["error"] = item.to_dict()
            images.append(entry)
        ticket = ticket_decision([d for d in output.decisions if d is not None])
        if ticket is None:
            errors = [item for item in output.ticket.items if isinstance(item, IntakeError)]
            detail = "no photo could be read: " + "; ".join(
                f"photo {i}: {e.message}" for i, e in enumerate(errors, start=1)
            )
            body = {"detail": detail, "images": images, "request_id": upload.request_id}
            return JSONResponse(body, status_code=errors[0].status)
        m.routes.labels(level="ticket", route=ticket.route).inc()
        timings = {k: milliseconds(v) for k, v in output.ticket.timings.items()}
        body = {
            **ticket.to_dict(),
            "images": images,
            **self.engine.provenance(),
            "request_id": upload.request_id,
            "timings_ms": {**timings, "inference": milliseconds(output.inference_seconds)},
        }
        return JSONResponse(body)
