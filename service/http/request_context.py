"""The HTTP layer every request passes through, whatever endpoint it is for (a plain ASGI middleware).

In order: give the request an id (``X-Request-ID`` echoed when sane, else a new one) and echo it in the response;
check the API key on ``/v1/*`` when one is configured (401); refuse bodies declared larger than the limit (413)
before reading them; bound the whole ``/v1/*`` request by ``request_timeout`` (504, so no client waits forever on
a stuck worker; 408 when it is the client's body that had not all arrived); answer 503 with ``Retry-After`` a
request still running when a shutdown's drain time is up (the server cancels it; uvicorn would answer a plain-text
500); finally count the request by endpoint and status, time it, and write one JSON access-log line.
``/health`` and ``/metrics`` never need the key: probes and scrapers carry no credentials, and neither exposes
customer data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.auth import key_matches, presented_key
from service.http.logs import request_id_var
from service.http.protocol import PROTOCOL_ERROR
from service.metrics import metrics

log = logging.getLogger("service.access")

PROTECTED_PREFIX = "/v1/"
_QUIET_PATHS = frozenset({"/health", "/metrics"})
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client went away before it was answered
_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$", re.ASCII)  # echoed in a header: ASCII only


def request_id_from(headers: Headers) -> str:
    """The caller's ``X-Request-ID`` if it is short and plain, else a fresh id."""
    given = headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        request_timeout: float,
        endpoints: Iterable[str],
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        token = request_id_var.set(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        path: str = scope["path"]
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        async def answer(code: int, reason: str, detail: str, extra: list[tuple[bytes, bytes]] = ()) -> None:
            state["error_reason"] = reason
            body = json.dumps({"detail": detail}, separators=(",", ":")).encode()  # as Starlette writes JSON
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        try:
            protected = path.startswith(PROTECTED_PREFIX)
            declared = headers.get("content-length", "")
            if protected and self.api_key and not key_matches(presented_key(headers), self.api_key):
                await answer(
                    401,
                    "unauthorized",
                    "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
                    [(b"www-authenticate", b"Bearer")],
                )
            elif declared.isdigit() and int(declared) > self.max_body_bytes:
                await answer(
                    413, "payload_too_large", f"request body is {declared} bytes; the limit is {self.max_body_bytes}"
                )
            elif protected:
                body_complete = False  # the last body chunk has arrived
                reading = False  # the app is waiting for the next body chunk right now

                async def receive_tracked() -> Message:
                    nonlocal body_complete, reading
                    reading = True  # stays True if the deadline cancels the wait
                    message = await receive()
                    reading = False
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        body_complete = True
                    return message

                in_flight = metrics().in_flight.labels(endpoint=path if path in self.endpoints else "other")
                in_flight.inc()
                try:
                    async with asyncio.timeout(self.request_timeout):
                        await self.app(scope, receive_tracked, send_with_id)
                except TimeoutError:
                    stalled = reading and not body_complete  # the client stopped sending, not the service answering
                    log.error("request timed out after %.1f s (stalled upload: %s)", self.request_timeout, stalled)
                    if response_started:
                        pass
                    elif not stalled:
                        await answer(504, "timeout", f"no answer within {self.request_timeout:g} s")
                    else:
                        await answer(
                            408,
                            "body_timeout",
                            f"the request body had not all arrived after {self.request_timeout:g} s",
                        )
                except ClientDisconnect:
                    if response_started:
                        raise
                    refused = state.get(PROTOCOL_ERROR)  # the connection answered and closed it: broken framing
                    if refused is None:
                        log.info("client disconnected before its request had all arrived")
                    state["error_reason"] = "client_disconnected" if refused is None else "malformed_http"
                    status = CLIENT_CLOSED_REQUEST if refused is None else refused
                except asyncio.CancelledError:
                    # Cancelled from outside: the server's shutdown drain time is up and this request is still running.
                    if response_started:
                        raise
                    log.error("request cancelled by the shutdown (drain time over, or a second signal)")
                    await answer(503, "shutting_down", "the service is shutting down; retry", [(b"retry-after", b"1")])
                finally:
                    in_flight.dec()
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            reason = state.get("error_reason")
            if reason is None and status == 503 and path.startswith(PROTECTED_PREFIX):
                reason = "unavailable"  # a full request queue, a worker lost with the request: retry later
            self._record(path, status, time.perf_counter() - started, reason, scope)
            request_id_var.reset(token)

    def _record(self, path: str, status: int, seconds: float, reason: str | None, scope: Scope) -> None:
        endpoint = path if path in self.endpoints else "other"
        m = metrics()
        m.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
        m.http_latency.labels(endpoint=endpoint).observe(seconds)
        if reason:
            m.errors.labels(reason=reason).inc()
        level = logging.DEBUG if path in _QUIET_PATHS and status < 400 else logging.INFO
        log.log(
            level,
            "%s %s %d",
            scope.get("method", ""),
            path,
            status,
            extra={"status": status, "duration_ms": round(seconds * 1000, 2), "endpoint": endpoint},
        )
