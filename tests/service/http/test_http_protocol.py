"""The HTTP processes' connection handling (``service.http.protocol``) on a real uvicorn server and socket: bounded
request heads (431, 408), JSON answers and metrics for requests uvicorn refuses by itself."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.http.protocol import bounded_head_protocol
from service.http.request_context import RequestContextMiddleware

MAX_HEAD = 4096
HEAD_TIMEOUT = 0.5
KEEP_ALIVE_S = 5  # uvicorn's idle timeout, which would close a silent connection too
PATIENCE_S = 60.0  # for what is quick on a quiet machine


async def _echo(scope: dict, receive: object, send: object) -> None:
    request = Request(scope, receive)  # type: ignore[arg-type]
    if request.url.path == "/v1/slow":
        await asyncio.sleep(2 * HEAD_TIMEOUT)
    body = await request.body()
    await JSONResponse({"bytes": len(body)})(scope, receive, send)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def port(metrics_dir: Path) -> Iterator[int]:
    app = RequestContextMiddleware(
        _echo, api_key=None, max_body_bytes=10**6, request_timeout=10.0, endpoints={"/v1/echo", "/v1/slow"}
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=bounded_head_protocol(max_head_bytes=MAX_HEAD, head_timeout=HEAD_TIMEOUT),
        loop="uvloop",
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(5)


def exchange(port: int, *pieces: bytes, pause: float = 0.0) -> tuple[int, dict, float]:
    """Send ``pieces`` (``pause`` seconds apart) and read the answer: its status, JSON body and when it came."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)  # a regression fails, it does not hang
        try:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
        except OSError:  # refused and closed while sending
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), None
            )
            if length is not None and len(body) >= length:
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body), time.monotonic() - started


def counted(status: str, reason: str | None = None, endpoint: str = "other") -> tuple[float, float]:
    from service.metrics import metrics

    m = metrics()
    requests = m.http_requests.labels(endpoint=endpoint, status=status)._value.get()
    return requests, (m.errors.labels(reason=reason)._value.get() if reason else 0.0)


def test_a_head_within_the_bound_is_served(port: int) -> None:
    status, body, _ = exchange(port, b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert (status, body) == (200, {"bytes": 3})


@pytest.mark.parametrize("reads", [1, 40], ids=["one-read", "many-reads"])
def test_a_head_over_the_bound_is_431(port: int, reads: int) -> None:
    before = counted("431", "head_too_large")
    head = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (2 * MAX_HEAD) + b"\r\n\r\n"
    step = -(-len(head) // reads)
    status, body, _ = exchange(port, *[head[i : i + step] for i in range(0, len(head), step)], pause=0.005)
    assert status == 431 and body == {"detail": f"the request line and headers are over {MAX_HEAD} bytes"}
    assert counted("431", "head_too_large") == (before[0] + 1, before[1] + 1)


def test_many_small_headers_over_the_bound_are_431(port: int) -> None:
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(100))
    status, _, _ = exchange(port, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert status == 431


def test_a_head_still_arriving_at_the_deadline_is_408(port: int) -> None:
    before = counted("408", "head_timeout")
    status, body, took = exchange(port, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n")
    assert status == 408 and "had not all arrived" in body["detail"]  # within exchange's 5 s: no later deadline
    assert took > HEAD_TIMEOUT * 0.9
    assert counted("408", "head_timeout") == (before[0] + 1, before[1] + 1)


def test_a_connection_that_sends_nothing_is_closed_quietly(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(KEEP_ALIVE_S - 0.5)  # closed by the head deadline, not the idle timeout
        assert sock.recv(100) == b""


def test_a_request_slower_than_the_head_deadline_is_answered_and_the_connection_reused(port: int) -> None:
    """The deadline covers the head only: a long request is not cut off, and the next request on the connection
    gets a fresh deadline."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5)
        for path in (b"/v1/slow", b"/v1/echo"):
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"bytes":2}'), answer


def test_a_malformed_request_is_a_json_400_and_counted(port: int) -> None:
    before = counted("400", "malformed_http")
    status, body, _ = exchange(port, b"GET /v1/echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
    assert status == 400 and body["detail"].endswith("not a well-formed HTTP/1.1 request")
    assert counted("400", "malformed_http") == (before[0] + 1, before[1] + 1)


def test_broken_chunked_framing_mid_body_is_counted_as_the_400_it_got_not_as_a_hang_up(port: int) -> None:
    """uvicorn answers the broken chunk itself; the app sees only a disconnect, and its middleware counts the 400."""
    before_400 = counted("400", "malformed_http", endpoint="/v1/echo")
    before_499 = counted("499", "client_disconnected", endpoint="/v1/echo")
    head = b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, body, _ = exchange(port, head + b"5\r\nhello\r\n", b"ZZ\r\n", pause=0.1)
    assert status == 400 and "not a well-formed" in body["detail"]
    deadline = time.monotonic() + PATIENCE_S
    while counted("400", "malformed_http", endpoint="/v1/echo")[0] == before_400[0]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert counted("400", "malformed_http", endpoint="/v1/echo") == (before_400[0] + 1, before_400[1] + 1)
    assert counted("499", "client_disconnected", endpoint="/v1/echo") == before_499
