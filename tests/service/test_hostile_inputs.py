"""The hostile-input corpus (``hostile_corpus.py``) against a real ``triage serve`` process on loopback.

For ``POST /v1/route`` and ``POST /v1/explain``: every case gets its documented status with a ``detail`` saying
why (never a 5xx), a routed ticket carries each photo's own outcome and echoes file names as sent, ``/health``
stays 200 after every request, and afterwards the same processes are serving (no worker died and was replaced),
no traceback was logged, and memory is back on its plateau.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.config import CLASSES, NEEDS_REVIEW
from service.settings import Settings
from tests.service.hostile_corpus import Case, Kit, Part, build_corpus, multipart
from tests.service.serve_process import Served, serving
from tests.started_processes import group_members

KEY = "hostile-key"
MAX_BYTES = 1024 * 1024
MAX_IMAGES = 10
MAX_REQUEST_BYTES = Settings(max_bytes=MAX_BYTES, max_images=MAX_IMAGES).max_request_bytes
ROUTES = {*CLASSES, NEEDS_REVIEW}
ENDPOINTS = {"route": "/v1/route", "explain": "/v1/explain"}
MIB = 1024 * 1024
REQUEST_TIMEOUT = 8.0  # every case is answered in well under a second
CONCURRENCY = 6  # requests in flight during the survival passes; the workers batch up to 8
# Memory: after four concurrent warm-up passes over the corpus, three more (about 530 requests) may grow the
# service's total RSS by at most this. Allocators keep what they freed (glibc arenas per thread, ONNX Runtime's
# buffers for each batch size it has seen, up to 8), so RSS climbs over the first passes and then stays on a
# plateau, with steps of up to ~10 MiB when an arena grows, instead of falling back to the start-up figure.
# Leaking one decoded photo or one input tensor per request (>= 230 KiB) would add over 100 MiB.
RSS_GROWTH_LIMIT = 32 * MIB
WARM_UP_PASSES = 4
MEASURED_PASSES = 3
# No process may ever have held this much more than at start-up: a decoded 40000x40000 bomb would need 4.5 GiB.
PEAK_LIMIT = 512 * MIB


@dataclass(frozen=True)
class Proc:
    pid: int
    command: str
    rss: int
    peak: int


def service_processes(pgid: int) -> dict[int, Proc]:
    """The live (non-zombie) processes of the service's process group, with their RSS and peak RSS in bytes."""
    found = {}
    for pid, command in group_members(pgid).items():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue  # exited since
        status = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        kib = {k: int(status[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM") if k in status}
        found[pid] = Proc(pid, command[:100], kib["VmRSS"], kib["VmHWM"])
    return found


@dataclass
class Hostile:
    served: Served
    client: httpx.Client
    corpus: list[Case]
    at_start: dict[int, Proc]


@pytest.fixture(scope="module")
def hostile(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, kit: Kit) -> Iterator[Hostile]:
    """One inference worker per endpoint, one HTTP process per worker, an API key and a 1 MiB photo limit."""
    corpus = build_corpus(kit, max_bytes=MAX_BYTES, max_images=MAX_IMAGES, max_request_bytes=MAX_REQUEST_BYTES)
    with serving(
        random_model_dir / "triage.onnx",
        tmp_path_factory.mktemp("hostile") / "serve.log",
        TRIAGE_API_KEY=KEY,
        TRIAGE_MAX_BYTES=str(MAX_BYTES),
        TRIAGE_MAX_IMAGES=str(MAX_IMAGES),
        TRIAGE_REQUEST_TIMEOUT=str(REQUEST_TIMEOUT),
        TRIAGE_LOG_LEVEL="warning",
    ) as served:
        processes = service_processes(served.proc.pid)
        with httpx.Client(base_url=served.url, timeout=60) as client:
            yield Hostile(served, client, corpus, processes)


def send_declared(url: str, path: str, headers: dict[str, str], length: int) -> httpx.Response:
    """Send only a request's headers, declaring a ``length``-byte body, and read the answer."""
    parsed = httpx.URL(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parsed.host}", f"Content-Length: {length}", "Connection: close"]
    head = "\r\n".join([*lines, *(f"{k}: {v}" for k, v in headers.items())]) + "\r\n\r\n"
    with socket.create_connection((parsed.host, parsed.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    answered = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split(" ", 2)[1]), content=body, headers=answered)


def send(client: httpx.Client, path: str, case: Case) -> httpx.Response:
    headers = {**case.headers, **({"X-API-Key": KEY} if case.authorised else {})}
    if case.declared_length is not None:
        return send_declared(str(client.base_url), path, headers, case.declared_length)
    if case.chunked:
        chunks = (case.body[i : i + 65536] for i in range(0, len(case.body), 65536))
        return client.post(path, content=chunks, headers=headers, params=case.query)
    return client.post(path, content=case.body, headers=headers, params=case.query)


def problems(endpoint: str, case: Case, response: httpx.Response) -> list[str]:
    """What is wrong with ``response`` as the answer to ``case`` (nothing, when it is as documented)."""
    expected = case.expected(endpoint)
    found = []
    if response.status_code != expected:
        found.append(f"status {response.status_code}, expected {expected}: {response.text[:300]}")
    if " object at 0x" in response.text:
        found.append(f"names a server-side object: {response.text[:300]}")
    try:
        body: Any = response.json()
    except ValueError:
        return [*found, f"not JSON: {response.text[:200]!r}"]
    if response.status_code != 200:
        if not (isinstance(body.get("detail"), str) and body["detail"]):
            found.append(f"no reason given: {body}")
        if endpoint == "explain" or case.photos is None or response.status_code in (400, 401):
            return found
    if endpoint == "explain":
        if body.get("route") not in ROUTES or not body.get("layers") or "overlay_png" not in body.get("cam", {}):
            found.append(f"not an explanation: {sorted(body)}")
        if case.names is not None and body.get("file") != case.names[0]:
            found.append(f"file name {body.get('file')!r}, expected {case.names[0]!r}")
        return found
    if case.photos is not None:
        images = body.get("images", [])
        outcomes = tuple(200 if "route" in image else image.get("error", {}).get("status") for image in images)
        if outcomes != case.photos:
            found.append(f"photo outcomes {outcomes}, expected {case.photos}")
        for image in images:
            if "route" in image and (
                image["route"] not in ROUTES or abs(sum(image["probabilities"].values()) - 1) > 1e-6
            ):
                found.append(f"bad photo entry {image}")
            if "error" in image and not image["error"].get("message"):
                found.append(f"photo error without a message {image}")
        if case.names is not None:
            names = tuple(image.get("file") for image in images)
            if names != case.names:
                found.append(f"file names {names!r}, expected {case.names!r}")
    if response.status_code == 200 and body.get("route") not in ROUTES:
        found.append(f"no ticket route: {body}")
    return found


def run_corpus(hostile: Hostile, endpoint: str, concurrency: int = 1) -> dict[str, tuple[int, list[str]]]:
    """Send every case that applies to ``endpoint``, ``concurrency`` at a time (so that the workers batch hostile
    requests with good ones); returns case -> (status, problems), with /health checked after each case."""

    def one(case: Case) -> tuple[str, int, list[str]]:
        try:
            response = send(hostile.client, ENDPOINTS[endpoint], case)
        except httpx.TransportError as exc:
            return case.name, 0, [f"no answer: {exc!r}"]
        found = problems(endpoint, case, response)
        health = hostile.client.get("/health")
        if health.status_code != 200:
            found.append(f"/health answered {health.status_code} after this case")
        return case.name, response.status_code, found

    cases = [case for case in hostile.corpus if case.expected(endpoint) is not None]
    with ThreadPoolExecutor(concurrency) as pool:
        return {name: (status, found) for name, status, found in pool.map(one, cases)}


def test_corpus_is_large_and_covers_every_status(hostile: Hostile) -> None:
    for endpoint in ENDPOINTS:
        statuses = [case.expected(endpoint) for case in hostile.corpus if case.expected(endpoint) is not None]
        assert len(statuses) >= 30
        assert {200, 400, 401, 413, 415, 422} <= set(statuses), endpoint


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_case_gets_its_documented_status(hostile: Hostile, endpoint: str) -> None:
    results = run_corpus(hostile, endpoint)
    failures = {name: found for name, (_, found) in results.items() if found}
    assert not failures, "\n".join(f"{name}: {'; '.join(found)}" for name, found in failures.items())
    assert all(status < 500 for status, _ in results.values())


def test_service_survives_the_corpus(hostile: Hostile) -> None:
    """Concurrent passes over the corpus (hostile requests batched with good ones) get the same answers; then the
    same processes as at start-up, no traceback logged, memory on a plateau, peak memory far below a bomb's."""
    pgid = hostile.served.proc.pid
    for passes in (WARM_UP_PASSES, MEASURED_PASSES):
        plateau = service_processes(pgid)
        for _ in range(passes):
            for endpoint in ENDPOINTS:
                results = run_corpus(hostile, endpoint, concurrency=CONCURRENCY)
                failures = {name: found for name, (status, found) in results.items() if found or status >= 500}
                assert not failures, failures
    after = service_processes(pgid)

    assert set(after) == set(hostile.at_start), f"processes changed: {hostile.at_start} -> {after}"
    assert len(after) >= 5  # supervisor, queue manager, two inference workers, HTTP server(s)
    assert hostile.client.get("/health").status_code == 200
    growth = sum(p.rss for p in after.values()) - sum(p.rss for p in plateau.values())
    assert growth <= RSS_GROWTH_LIMIT, {pid: (plateau[pid].rss // MIB, p.rss // MIB) for pid, p in after.items()}
    for pid, proc in after.items():
        assert proc.peak - hostile.at_start[pid].rss <= PEAK_LIMIT, (proc, hostile.at_start[pid])
    time.sleep(0.2)  # let the last log lines reach the file
    log = hostile.served.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert hostile.served.proc.poll() is None


def test_a_non_ascii_digit_in_channels_is_an_option_error() -> None:
    from service.explain.options import OptionError, parse_options

    with pytest.raises(OptionError):
        parse_options({"channels": "²"})


def test_an_upload_that_stalls_is_a_client_timeout(hostile: Hostile) -> None:
    body, headers = multipart([Part(b"\xff\xd8\xff" + bytes(1000))])
    url = httpx.URL(hostile.served.url)
    head = [
        "POST /v1/route HTTP/1.1",
        f"Host: {url.host}",
        f"Content-Length: {len(body)}",
        f"Content-Type: {headers['content-type']}",
        f"X-API-Key: {KEY}",
    ]
    with socket.create_connection((url.host, url.port), timeout=REQUEST_TIMEOUT + 5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])  # then nothing more
        started = time.monotonic()
        status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    assert time.monotonic() - started <= REQUEST_TIMEOUT + 2
    assert status_line.split(b" ")[1] == b"408", status_line
