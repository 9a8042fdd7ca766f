"""The HTTP surface in-process (LitServe's test harness + FastAPI's TestClient, real inference workers): the error
table, per-photo errors, batching under concurrency, /health, /v1/model and /metrics."""

from __future__ import annotations

import base64
import inspect
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from litserve.utils import wrap_litserve_start

from model.config import CLASSES, NEEDS_REVIEW
from service.runtime.internals import WorkerSetupStatus
from service.server import build_server, preflight
from service.settings import Settings

KEY = "in-process-test-key"
ROUTES = {*CLASSES, NEEDS_REVIEW}
MAX_BYTES = 400_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def handoff_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("handoff")


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[TestClient, Any]]:
    """The service of ``settings`` in-process, once every inference worker is ready."""
    card, plan = preflight(settings)
    with wrap_litserve_start(build_server(settings, card, plan)) as started, TestClient(started.app) as client:
        deadline = time.monotonic() + 180  # spawning and loading the workers: seconds, more on a loaded machine
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the inference workers did not become ready"
            time.sleep(0.1)
        yield client, started


@pytest.fixture(scope="module")
def served(random_model_dir: Path, metrics_dir: Path, handoff_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = Settings(
        handoff_dir=handoff_dir,
        model_path=random_model_dir / "triage.onnx",
        api_key=KEY,
        device="cpu",
        max_images=4,
        max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS,
        max_batch_size=4,
        batch_timeout=0.05,
        request_timeout=30.0,
    )
    with serving(settings) as (client, started):
        yield client, started
    assert list(handoff_dir.iterdir()) == [], "the HTTP server left hand-off files behind when it stopped"


@pytest.fixture
def client(served: tuple[TestClient, Any]) -> TestClient:
    return served[0]


def post(client: TestClient, *photos: tuple[str, bytes], key: str | None = KEY, **kw: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    headers.update(kw.pop("headers", {}))
    files = [("file", (name, data, "application/octet-stream")) for name, data in photos]
    return client.post("/v1/route", files=files, headers=headers, **kw)


def post_json(client: TestClient, body: object, key: str | None = KEY) -> httpx.Response:
    return client.post("/v1/route", json=body, headers={"X-API-Key": key} if key else {})


def assert_routed(entry: dict[str, Any]) -> None:
    assert entry["route"] in ROUTES
    assert 0.5 <= entry["confidence"] <= 1.0
    assert set(entry["probabilities"]) == set(CLASSES)
    assert abs(sum(entry["probabilities"].values()) - 1.0) < 1e-9


def metric_values(client: TestClient, *names: str) -> list[float]:
    samples = dict(
        line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if line and not line.startswith("#")
    )
    return [float(samples.get(name, 0.0)) for name in names]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_health_is_open_and_ready(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200


def test_health_is_503_until_every_worker_is_ready(served: tuple[TestClient, Any]) -> None:
    client, server = served
    server.workers_setup_status["route_1"] = WorkerSetupStatus.STARTING
    try:
        assert client.get("/health").status_code == 503
    finally:
        del server.workers_setup_status["route_1"]
    assert client.get("/health").status_code == 200


def test_route_multipart(client: TestClient, photos: dict[str, bytes]) -> None:
    response = post(client, ("a.jpg", photos["jpeg"]), ("b.heic", photos["heic"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert_routed(body)
    assert [image["file"] for image in body["images"]] == ["a.jpg", "b.heic"]
    for image in body["images"]:
        assert_routed(image)
    assert set(body["model"]) >= {"name", "version", "sha256"} and body["model"]["name"] == "random-test-model"
    assert body["device"] == "cpu" and body["provider"] == "CPUExecutionProvider"
    assert response.headers["x-request-id"] == body["request_id"]


def test_route_json_base64(client: TestClient, photos: dict[str, bytes]) -> None:
    images = [b64(photos["png"]), "data:image/webp;base64," + b64(photos["webp"])]
    response = post_json(client, {"images": images})
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 2
    for image in response.json()["images"]:
        assert_routed(image)


def test_the_ticket_route_is_damage_if_any_photo_is(client: TestClient, photos: dict[str, bytes]) -> None:
    body = post(client, *[(f"{k}.bin", photos[k]) for k in ("jpeg", "png", "cmyk_jpeg", "png16")]).json()
    routes = [image["route"] for image in body["images"]]
    if "screen_damage" in routes:
        assert body["route"] == "screen_damage"
    elif NEEDS_REVIEW in routes:
        assert body["route"] == NEEDS_REVIEW
    else:
        assert body["route"] == "general_returns"


def test_request_id_is_echoed_or_created(client: TestClient, photos: dict[str, bytes]) -> None:
    response = post(client, ("a.jpg", photos["jpeg"]), headers={"X-Request-ID": "ticket-42.a"})
    assert response.headers["x-request-id"] == "ticket-42.a" == response.json()["request_id"]
    odd = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert odd.headers["x-request-id"] != "bad id with spaces" and len(odd.headers["x-request-id"]) == 32


def test_api_key_header_or_bearer(client: TestClient, photos: dict[str, bytes]) -> None:
    assert post(client, ("a.jpg", photos["jpeg"]), key=None).status_code == 401
    wrong = post(client, ("a.jpg", photos["jpeg"]), key="nope")
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    bearer = post(client, ("a.jpg", photos["jpeg"]), key=None, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    assert client.get("/v1/model").status_code == 401


def _error_cases(photos: dict[str, bytes], kit: Any) -> dict[str, tuple[int, dict[str, Any]]]:
    jpeg, png = photos["jpeg"], photos["png"]
    noise = kit.encode(kit.scene(700, 700, seed=9).effect_spread(3), "PNG")
    assert len(noise) > MAX_BYTES
    over = Settings(max_bytes=MAX_BYTES, max_images=4).max_request_bytes + 1  # the served fixture's limits
    return {
        "malformed json": (400, {"content": b'{"images": [', "headers": {"content-type": "application/json"}}),
        "wrong json schema": (400, {"json": {"photos": [b64(jpeg)]}}),
        "images not strings": (400, {"json": {"images": [1, 2]}}),
        "no images": (400, {"json": {"images": []}}),
        "no file parts": (400, {"files": [("photo", ("a.jpg", jpeg))]}),
        "multipart without boundary": (
            400,
            {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}},
        ),
        "too many photos": (413, {"files": [("file", (f"{i}.jpg", jpeg)) for i in range(5)]}),
        "photo over the byte limit": (413, {"files": [("file", ("big.png", noise))]}),
        "photo over the pixel limit": (413, {"files": [("file", ("bomb.png", kit.png_header_only(3000, 3000)))]}),
        "body over the request limit": (413, {"content": b"x" * over, "headers": {"content-type": "image/png"}}),
        "chunked body over the request limit": (413, {"content": (b"x" * 100_000 for _ in range(over // 100_000 + 1))}),
        "not an image": (415, {"files": [("file", ("notes.txt", b"just some text"))]}),
        "unsupported content type": (415, {"content": jpeg, "headers": {"content-type": "image/jpeg"}}),
        "truncated photo": (422, {"files": [("file", ("cut.png", png[: len(png) // 3]))]}),
        "empty photo": (422, {"files": [("file", ("empty.jpg", b""))]}),
        "invalid base64": (422, {"json": {"images": ["not base64 at all!"]}}),
    }


CASES = [
    "malformed json",
    "wrong json schema",
    "images not strings",
    "no images",
    "no file parts",
    "multipart without boundary",
    "too many photos",
    "photo over the byte limit",
    "photo over the pixel limit",
    "body over the request limit",
    "chunked body over the request limit",
    "not an image",
    "unsupported content type",
    "truncated photo",
    "empty photo",
    "invalid base64",
]


@pytest.mark.parametrize("case", CASES)
def test_error_table(client: TestClient, photos: dict[str, bytes], kit: Any, case: str) -> None:
    status, request = _error_cases(photos, kit)[case]
    headers = {"X-API-Key": KEY, **request.pop("headers", {})}
    response = client.post("/v1/route", headers=headers, **request)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    ("request_kw", "said"),
    [
        ({}, "the request body is empty"),  # curl -X POST URL: no body, no content type
        ({"content": b"", "headers": {"content-type": "application/json"}}, "the request body is empty"),
        ({"content": b" \r\n"}, "the request body is empty"),
        ({"content": b"\xff\xd8\xff\xe0 a photo sent raw"}, "the request has no content type and its body is not JSON"),
    ],
    ids=["nothing", "empty json", "blank", "raw photo bytes"],
)
def test_a_request_without_photos_is_told_how_to_send_them(
    client: TestClient, request_kw: dict[str, Any], said: str
) -> None:
    headers = {"X-API-Key": KEY, **request_kw.pop("headers", {})}
    response = client.post("/v1/route", headers=headers, **request_kw)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail.startswith(said) and "EOF" not in detail, detail
    assert "multipart/form-data 'file' parts" in detail and "curl -F file=@photo.jpg" in detail
    assert '{"images": ["<base64>", ...]}' in detail


def test_a_bad_photo_gets_its_own_error_and_the_others_are_routed(client: TestClient, photos: dict[str, bytes]) -> None:
    png = photos["png"]
    response = post(
        client,
        ("good.jpg", photos["jpeg"]),
        ("notes.txt", b"text"),
        ("cut.png", png[:300]),
        ("ok.webp", photos["webp"]),
    )
    assert response.status_code == 200, response.text
    images = response.json()["images"]
    assert_routed(images[0])
    assert_routed(images[3])
    assert images[1] == {"file": "notes.txt", "error": {"status": 415, "message": images[1]["error"]["message"]}}
    assert images[2]["error"]["status"] == 422 and "route" not in images[2]
    assert_routed(response.json())


def test_photos_over_the_pixel_limit_get_one_wording_whoever_noticed(client: TestClient, kit: Any) -> None:
    """Over the service's 50 MP and over Pillow's own refusal (179 MP): the service's words both times."""
    response = post(
        client, ("big.png", kit.png_header_only(9_000, 9_000)), ("bomb.png", kit.png_header_only(20_000, 20_000))
    )
    assert response.status_code == 413, response.text
    messages = [image["error"]["message"] for image in response.json()["images"]]
    limit = MAX_PIXELS
    assert messages == [
        f"image is 9000x9000 pixels; the limit is {limit} pixels",
        f"image is {20_000 * 20_000} pixels; the limit is {limit} pixels",
    ]
    assert "decompression bomb" not in response.text


def test_a_ticket_without_a_readable_photo_answers_with_the_first_error(client: TestClient) -> None:
    response = post(client, ("notes.txt", b"text"), ("cut.jpg", b"\xff\xd8\xff\xe0garbage"))
    assert response.status_code == 415
    body = response.json()
    assert "photo 1" in body["detail"] and "photo 2" in body["detail"]
    assert [image["error"]["status"] for image in body["images"]] == [415, 422]


def test_mixed_batch_under_concurrency(client: TestClient, photos: dict[str, bytes]) -> None:
    """Concurrent requests are batched together; a bad request never fails its batch-mates."""
    requests = [
        (200, [("a.jpg", photos["jpeg"])]),
        (415, [("x.txt", b"text")]),
        (200, [("b.png", photos["png"]), ("y.txt", b"text")]),
        (422, [("cut.jpg", photos["jpeg"][:200])]),
        (200, [("c.heic", photos["heic"]), ("d.webp", photos["webp"])]),
        (422, [("empty.png", b"")]),
    ] * 3

    def send(item: tuple[int, list[tuple[str, bytes]]]) -> tuple[int, int]:
        return item[0], post(client, *item[1]).status_code

    before = metric_values(client, "triage_batch_requests_sum", "triage_batch_requests_count")
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        outcomes = list(pool.map(send, requests))
    assert [got for _, got in outcomes] == [want for want, _ in outcomes]
    after = metric_values(client, "triage_batch_requests_sum", "triage_batch_requests_count")
    handled, batches = (after[i] - before[i] for i in range(2))
    assert handled == len(requests)
    assert batches < handled, "no two concurrent requests were batched together"


def test_handed_over_photos_files_are_given_back_once_answered(
    served: tuple[TestClient, Any], photos: dict[str, bytes], handoff_dir: Path
) -> None:
    """The workers read every photo from the hand-off directory; once answered, whatever the outcome, a photo's file
    is idle (kept for the next photos) or removed: nothing else stays there."""
    client, started = served
    tickets = [[("a.jpg", photos["jpeg"]), ("b.png", photos["png"])], [("cut.jpg", photos["jpeg"][:200])]] * 4
    with ThreadPoolExecutor(max_workers=len(tickets)) as pool:
        statuses = [r.status_code for r in pool.map(lambda t: post(client, *t), tickets)]
    assert statuses == [200, 422] * 4
    assert post(client, ("a.jpg", photos["jpeg"]), key="wrong").status_code == 401
    handoff = started.app.state.photo_handoff
    assert set(handoff_dir.iterdir()) == {path for path, _ in handoff.pool.idle} != set()
    # And when the server stops, the idle files go too (checked as the module's server fixture ends).


def test_model_endpoint(client: TestClient, random_model_dir: Path) -> None:
    response = client.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "random-test-model" and body["classes"] == list(CLASSES)
    assert {"preprocessing", "calibration", "artifacts"} <= set(body)
    assert body["provider"] == "CPUExecutionProvider" and body["device"] == "cpu"
    assert body["serving"][0]["sha256"] == body["artifacts"]["triage.onnx"]["sha256"]


def test_model_report_is_the_file_the_card_records(client: TestClient, random_model_dir: Path) -> None:
    response = client.get("/v1/model/report", headers={"X-API-Key": KEY})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == (random_model_dir / "report.html").read_bytes()
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert client.get("/v1/model/report").status_code == 401  # the same key as the rest of /v1


def test_metrics_after_traffic(client: TestClient, photos: dict[str, bytes]) -> None:
    assert post(client, ("a.jpg", photos["jpeg"]), ("x.txt", b"text")).status_code == 200
    assert post(client, ("a.jpg", photos["jpeg"]), key=None).status_code == 401
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for needle in (
        'triage_http_requests_total{endpoint="/v1/route",status="200"}',
        'triage_http_requests_total{endpoint="/v1/route",status="401"}',
        'triage_http_requests_total{endpoint="other",status="404"}',
        'triage_errors_total{reason="unsupported_type"}',
        'triage_errors_total{reason="unauthorized"}',
        'triage_routes_total{level="ticket"',
        'triage_routes_total{level="photo"',
        'provider="CPUExecutionProvider"',
        "triage_decode_seconds_count",
        "triage_queue_seconds_count",
        "triage_inference_seconds_count",
        "triage_batch_photos_bucket",
        "triage_batch_requests_bucket",
        "triage_confidence_bucket",
        'triage_request_seconds_count{endpoint="/v1/route"}',
    ):
        assert needle in text, needle


def test_no_request_waits_on_a_thread_pool(served: tuple[TestClient, Any]) -> None:
    """Every dependency of every API route is a coroutine (or needs no call): FastAPI runs a plain function
    dependency in its thread pool, a thread hop per request."""
    from fastapi.dependencies.models import Dependant
    from fastapi.routing import APIRoute

    def calls(dependant: Dependant) -> list[Any]:
        own = [dependant.call] if dependant.call is not None else []
        return own + [call for sub in dependant.dependencies for call in calls(sub)]

    routes = [r for r in served[1].app.routes if isinstance(r, APIRoute) and r.path.startswith("/v1/")]
    assert {"/v1/route", "/v1/explain", "/v1/model"} <= {r.path for r in routes}
    for route in routes:
        for call in calls(route.dependant):
            assert inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call), (route.path, call)


def test_the_shipped_int8_variant_serves_routes_and_explanations(
    metrics_dir: Path, tmp_path: Path, photos: dict[str, bytes]
) -> None:
    """``TRIAGE_MODEL_PATH=artifacts/triage.int8.onnx`` (README): the quantised file starts both endpoints, and its
    explanation routes the photo as its route endpoint does."""
    from model.card import read_card

    artifacts = Path(__file__).resolve().parents[2] / "artifacts"
    quantization = read_card(artifacts / "model_card.json")["quantization"]
    assert quantization["shipped"], "the README offers the int8 file; the card must say it ships"
    settings = Settings(handoff_dir=tmp_path, model_path=artifacts / quantization["file"], device="cpu")
    card, _ = preflight(settings)
    with serving(settings) as (client, _):
        routed = client.post("/v1/route", files=[("file", ("a.jpg", photos["jpeg"], "image/jpeg"))])
        explained = client.post("/v1/explain", files={"file": ("a.jpg", photos["jpeg"], "image/jpeg")})
        model = client.get("/v1/model").json()  # answered by the workers that loaded the int8 file
    assert routed.status_code == 200 and explained.status_code == 200, (routed.text, explained.text[:300])
    assert routed.json()["images"][0]["route"] == explained.json()["route"]
    assert explained.json()["cam"]
    assert routed.json()["model"]["sha256"] == card["artifacts"][quantization["file"]]["sha256"]
    assert model["serving"], model
