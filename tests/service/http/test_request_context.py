"""The request middleware on a tiny app (auth, request id, body limit, deadline), and the API-key helpers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from service.http.auth import key_matches, presented_key
from service.http.request_context import RequestContextMiddleware

KEY = "k-123"


@pytest.fixture(scope="module")
def client(metrics_dir: Path) -> TestClient:
    app = FastAPI()

    @app.get("/v1/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(3)
        return {"ok": "late"}

    @app.post("/v1/echo")
    async def echo() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/v1/in-flight")
    async def in_flight() -> dict[str, float]:
        return {"route": _gauge("/v1/in-flight")}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "healthy"}

    @app.get("/v1/busy")
    async def busy() -> dict[str, str]:
        raise HTTPException(503, "queue full", headers={"Retry-After": "1"})

    app.add_middleware(
        RequestContextMiddleware,
        api_key=KEY,
        max_body_bytes=1000,
        request_timeout=0.3,
        endpoints={"/v1/slow", "/v1/echo", "/v1/in-flight", "/v1/busy", "/health"},
    )
    return TestClient(app)


def _gauge(endpoint: str) -> float:
    from service.metrics import metrics

    return metrics().in_flight.labels(endpoint=endpoint)._value.get()


def test_requests_in_flight_are_counted_while_they_run(client: TestClient) -> None:
    assert client.get("/v1/in-flight", headers={"X-API-Key": KEY}).json() == {"route": 1.0}
    assert _gauge("/v1/in-flight") == 0.0
    client.get("/v1/slow", headers={"X-API-Key": KEY})  # a request that times out is no longer in flight either
    assert _gauge("/v1/slow") == 0.0


def test_protected_paths_need_the_key(client: TestClient) -> None:
    assert client.post("/v1/echo").status_code == 401
    assert client.post("/v1/echo", headers={"X-API-Key": "k-12"}).status_code == 401
    assert client.post("/v1/echo", headers={"Authorization": "Basic k-123"}).status_code == 401
    assert client.post("/v1/echo", headers={"X-API-Key": KEY}).status_code == 200
    assert client.post("/v1/echo", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    response = client.post("/v1/echo")
    assert response.headers["www-authenticate"] == "Bearer" and response.json()["detail"]


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get("/health").status_code == 200


def test_a_slow_request_is_answered_504_at_the_deadline(client: TestClient) -> None:
    response = client.get("/v1/slow", headers={"X-API-Key": KEY, "X-Request-ID": "slow-1"})
    assert response.status_code == 504 and "0.3" in response.json()["detail"]
    assert response.headers["x-request-id"] == "slow-1"


def test_declared_oversize_body_is_413_before_reading(client: TestClient) -> None:
    response = client.post("/v1/echo", content=b"x" * 1001, headers={"X-API-Key": KEY})
    assert response.status_code == 413
    assert client.post("/v1/echo", content=b"x" * 1000, headers={"X-API-Key": KEY}).status_code == 200


def test_unauthenticated_oversize_body_is_401_first(client: TestClient) -> None:
    assert client.post("/v1/echo", content=b"x" * 5000).status_code == 401


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": " abc "}, "abc"),
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "BEARER  abc "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
        ({"x-api-key": "abc\u00a0"}, "abc\u00a0"),  # a no-break space is not HTTP whitespace: part of the key
        ([("x-api-key", "abc"), ("x-api-key", "abc")], "abc"),
        ([("x-api-key", "abc"), ("x-api-key", "wrong")], None),
        ([("x-api-key", "wrong"), ("x-api-key", "abc")], None),
        ([("authorization", "Bearer abc"), ("authorization", "Bearer abc")], None),
    ],
)
def test_presented_key(headers: dict[str, str] | list[tuple[str, str]], expected: str | None) -> None:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in (headers.items() if isinstance(headers, dict) else headers)]
    assert presented_key(Headers(raw=raw)) == expected


def test_key_matches() -> None:
    assert key_matches("abc", "abc")
    assert not key_matches("abd", "abc")
    assert not key_matches("", "abc")
    assert not key_matches(None, "abc")
    assert key_matches("ключ", "ключ")


def test_a_request_cancelled_by_the_shutdown_is_answered_503(metrics_dir: Path) -> None:
    """uvicorn cancels what still runs when the drain time is up; the client gets a JSON 503 to retry elsewhere, not
    uvicorn's plain-text 500."""
    import json

    running = asyncio.Event()

    async def stuck(scope: dict, receive: object, send: object) -> None:
        running.set()
        await asyncio.sleep(30)

    middleware = RequestContextMiddleware(
        stuck, api_key=None, max_body_bytes=1000, request_timeout=10.0, endpoints={"/v1/stuck"}
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> None:
        scope = {"type": "http", "path": "/v1/stuck", "method": "POST", "headers": []}
        task = asyncio.create_task(middleware(scope, receive, send))
        await running.wait()
        task.cancel()
        await task  # answered, not re-raised: uvicorn has nothing left to send

    asyncio.run(main())
    assert sent[0]["status"] == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"detail": "the service is shutting down; retry"}


def test_a_503_without_a_reason_counts_as_unavailable(client: TestClient) -> None:
    from service.metrics import metrics

    counter = metrics().errors.labels(reason="unavailable")
    before = counter._value.get()
    assert client.get("/v1/busy", headers={"X-API-Key": KEY}).status_code == 503
    assert counter._value.get() == before + 1


def test_a_client_gone_before_its_body_arrived_is_499_not_a_500(metrics_dir: Path) -> None:
    """Starlette raises ``ClientDisconnect`` when the client hangs up mid-upload; that is the client's doing, counted
    as 499 with its own reason, and nothing propagates for Starlette to turn into a 500 and a traceback."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from service.metrics import metrics

    async def app(scope: dict, receive: object, send: object) -> None:
        body = await Request(scope, receive).body()
        await JSONResponse({"bytes": len(body)})(scope, receive, send)

    middleware = RequestContextMiddleware(
        app, api_key=None, max_body_bytes=10_000, request_timeout=5.0, endpoints={"/v1/upload"}
    )
    chunks = [{"type": "http.request", "body": b"x" * 100, "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return chunks.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    m = metrics()
    gone = m.errors.labels(reason="client_disconnected")
    counted = m.http_requests.labels(endpoint="/v1/upload", status="499")
    failed = m.http_requests.labels(endpoint="/v1/upload", status="500")
    before = gone._value.get(), counted._value.get(), failed._value.get()
    scope = {"type": "http", "path": "/v1/upload", "method": "POST", "headers": [], "query_string": b""}
    asyncio.run(middleware(scope, receive, send))
    assert sent == []  # nobody to answer
    assert (gone._value.get(), counted._value.get(), failed._value.get()) == (before[0] + 1, before[1] + 1, before[2])


@pytest.mark.parametrize(
    ("given", "kept"), [("ticket-42.a:b@c/d+e=f", True), ("café", False), ("a b", False), ("", False)]
)
def test_a_request_id_is_echoed_only_when_plain_ascii(given: str, kept: bool) -> None:
    """It goes back in a response header: "café" sent as Latin-1 came back re-encoded as UTF-8."""
    from service.http.request_context import request_id_from

    chosen = request_id_from(Headers(raw=[(b"x-request-id", given.encode("latin-1"))]))
    assert (chosen == given) is kept and chosen.isascii()
