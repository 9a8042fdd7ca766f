"""The HTTP/1.1 connection handling of the HTTP processes: uvicorn's httptools protocol with a bounded request head.

Out of the box it reads a request's line and headers without limit of size or time, before any middleware (the API
key check included) sees the request: four connections sending 250 MB of header lines each grew two HTTP processes
by 0.9 GB, and connections that never finished their headers stayed open for good. Here:

- a request head (request line and headers) over ``max_head_bytes`` is answered 431 and the connection closed;
- a head not complete ``head_timeout`` seconds after the connection opened (or after its first byte, for the later
  requests of a keep-alive connection) is answered 408 and the connection closed (a connection that sent nothing
  at all is closed without an answer, as uvicorn closes idle keep-alive connections);
- what uvicorn answers by itself (a request it cannot parse: 400) is JSON ``{"detail": ...}`` like every other
  error, and counted in ``triage_http_requests_total`` and ``triage_errors_total``. When that happens while the
  app is reading the request's body (broken chunked framing), the app only sees the client go away: the request's
  ASGI state says what happened (``PROTOCOL_ERROR``), so that ``RequestContextMiddleware`` counts a 400, not 499.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from service.metrics import metrics
from service.runtime.internals import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; browsers and HTTP clients send a few KiB at most
PROTOCOL_ERROR = "protocol_error"  # key in a request's ASGI state: the status the connection was closed with


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that has been answered already."""


class BoundedHeadProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a bounded head; use ``bounded_head_protocol`` to set the bounds."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the current request's head is not complete yet
        self._head_bytes = 0  # bytes read while the head was incomplete
        self._head_size = 0  # request line and header lines parsed so far
        self._head_timer: asyncio.TimerHandle | None = None
        self._message_completed = False
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._message_completed = False
        super().data_received(data)
        # Bytes read while a head is incomplete count towards it; a chunk that also ended a request is not counted
        # (where the next head starts in it is unknown), which lets at most one more chunk through.
        if self._in_head and not self._message_completed and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431, f"the request line and headers are over {self.max_head_bytes} bytes", "head_too_large"
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        if self._head_timer is None:
            self._start_head_timer()

    # A head that arrives in one read completes before ``data_received`` can count it: its parts count here.
    def on_url(self, url: bytes) -> None:
        self._grow_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.max_head_bytes:
            self._refuse(431, self._too_large, "head_too_large")
            raise _Refused  # stops the parser: httptools raises it on as an HttpParserError

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._message_completed = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:  # the parser stopped because this protocol refused the request already
            return
        self._refuse(400, f"{msg.rstrip('.')}: not a well-formed HTTP/1.1 request", "malformed_http")

    @property
    def _too_large(self) -> str:
        return f"the request line and headers are over {self.max_head_bytes} bytes"

    def _start_head_timer(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self._refused:
            return
        if self._head_bytes == 0 and self.cycle is None:  # opened and never used
            self._refused = True
            self.transport.close()
            return
        detail = f"the request line and headers had not all arrived after {self.head_timeout:g} s"
        self._refuse(408, detail, "head_timeout")

    def _refuse(self, status: int, detail: str, reason: str) -> None:
        """Answer ``status`` with ``{"detail": detail}`` and close the connection; count it unless the app, which is
        reading this request's body, counts it itself."""
        self._refused = True
        self._stop_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not self._in_head:
            cycle.scope["state"][PROTOCOL_ERROR] = status  # the app's request: its middleware counts it
        else:
            m = metrics()
            m.http_requests.labels(endpoint="other", status=str(status)).inc()
            m.errors.labels(reason=reason).inc()
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode()  # as Starlette writes JSON
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()


def bounded_head_protocol(max_head_bytes: int = MAX_HEAD_BYTES, head_timeout: float = 30.0) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) with these bounds."""
    return type(
        "BoundedHeadProtocol",
        (BoundedHeadProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
    )
