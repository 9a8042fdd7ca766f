"""End to end against real ``triage serve`` processes on loopback: routing every kind of photo, the stdlib client
and ``triage predict --url``, metrics summed over processes, start-up refusals, SIGTERM with requests in flight
leaving no process behind, and a killed inference worker restarted in place."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from model.config import CLASSES, NEEDS_REVIEW
from tests.service.serve_process import HTTP_TIMEOUT, ROOT, Served, free_port, server_env, serving
from triage_cli.client import route_remote

KEY = "e2e-key"
ROUTES = {*CLASSES, NEEDS_REVIEW}
Serve = Callable[..., Served]
PATIENCE_S = 120.0  # for anything a test waits on that is quick on a quiet machine


@pytest.fixture(scope="module")
def server(random_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two inference workers and two HTTP processes, with an API key."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(
        random_model_dir / "triage.onnx",
        log,
        TRIAGE_API_KEY=KEY,
        TRIAGE_WORKERS_PER_DEVICE="2",
        TRIAGE_BATCH_TIMEOUT="0.02",
    ) as served:
        yield served


def test_routes_every_kind_of_photo(server: Served, photos: dict[str, bytes]) -> None:
    files = [(f"{name}.bin", data) for name, data in photos.items()]
    if importlib.util.find_spec("model.synth") is not None:
        from model.synth import render_photo

        files += [(f"synth-{label}.jpg", render_photo(seed, label).encode()) for seed, label in enumerate(CLASSES)]
    for start_at in range(0, len(files), 10):
        chunk = files[start_at : start_at + 10]
        response = httpx.post(
            server.url + "/v1/route",
            files=[("file", item) for item in chunk],
            headers={"X-API-Key": KEY},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["route"] in ROUTES and body["device"] == "cpu"
        assert [image["file"] for image in body["images"]] == [name for name, _ in chunk]
        for image in body["images"]:
            assert image["route"] in ROUTES, image
            assert abs(sum(image["probabilities"].values()) - 1) < 1e-9


def test_health_is_open_and_routes_need_the_key(server: Served, photos: dict[str, bytes]) -> None:
    assert httpx.get(server.url + "/health", timeout=HTTP_TIMEOUT).status_code == 200
    response = httpx.post(server.url + "/v1/route", files=[("file", ("a.jpg", photos["jpeg"]))], timeout=HTTP_TIMEOUT)
    assert response.status_code == 401


def test_model_endpoint_reports_the_live_provider(server: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = httpx.get(server.url + "/v1/model", headers=headers, timeout=HTTP_TIMEOUT).json()
    assert body["provider"] == "CPUExecutionProvider" and body["device"] == "cpu"
    assert body["name"] == "random-test-model"


def test_client_routes_files_in_chunks(server: Served, photos: dict[str, bytes], tmp_path: Path) -> None:
    names = ["jpeg", "png", "webp", "heic", "cmyk_jpeg", "png16", "rgba_png", "exif_rotated_jpeg", "gray_jpeg"] * 2
    paths = []
    for i, name in enumerate(names):
        path = tmp_path / f"{i:02d}-{name}"
        path.write_bytes(photos[name])
        paths.append(path)
    (tmp_path / "notes.txt").write_text("not a photo")
    paths[3:3] = [tmp_path / "notes.txt", tmp_path / "missing.jpg"]
    results = route_remote(paths, server.url, api_key=KEY)
    assert [r["file"] for r in results] == [str(p) for p in paths]
    assert results[3]["error"]["status"] == 415 and results[4]["error"]["status"] == 404
    for result in results[:3] + results[5:]:
        assert set(result) == {"file", "route", "confidence", "probabilities"} and result["route"] in ROUTES
    refused = route_remote(paths[:1], server.url, api_key="wrong")
    assert refused[0]["error"]["status"] == 401


def test_client_routes_every_file_through_a_service_with_a_lower_photo_limit(
    random_model_dir: Path, photos: dict[str, bytes], tmp_path: Path, serve: Serve
) -> None:
    """Ten photos per request are too many for a service allowing three: the client sends them one by one."""
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(photos["jpeg"])
    served = serve(random_model_dir / "triage.onnx", TRIAGE_MAX_IMAGES="3")
    results = route_remote(paths, served.url)
    assert [r.get("route") in ROUTES for r in results] == [True] * 5, results


def test_predict_cli_through_the_service(server: Served, photos: dict[str, bytes], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.webp", tmp_path / "bad.jpg"
    good.write_bytes(photos["webp"])
    bad.write_bytes(b"\xff\xd8\xff not really")
    done = subprocess.run(
        [sys.executable, "-m", "triage_cli", "predict", str(good), str(bad), "--json", "--url", server.url],
        cwd=ROOT,
        env={**server_env(Path("unused"), 0), "TRIAGE_API_KEY": KEY},
        capture_output=True,
        timeout=PATIENCE_S,
    )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 1, done.stderr.decode()
    assert lines[0]["file"] == str(good) and lines[0]["route"] in ROUTES
    assert lines[1] == {"file": str(bad), "error": lines[1]["error"]} and lines[1]["error"]["status"] == 422


def _samples(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))}


def _metrics(url: str) -> dict[str, float]:
    return _samples(httpx.get(url + "/metrics", timeout=HTTP_TIMEOUT).text)


def test_metrics_are_summed_over_processes(server: Served, photos: dict[str, bytes]) -> None:
    key = 'triage_http_requests_total{endpoint="/v1/route",status="200"}'
    before = _metrics(server.url).get(key, 0.0)
    with httpx.Client(headers={"X-API-Key": KEY}, timeout=HTTP_TIMEOUT) as client:

        def send(i: int) -> int:
            files = [("file", ("a.jpg", photos["jpeg"])), ("file", ("b.txt", b"text"))]
            return client.post(server.url + "/v1/route", files=files).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(send, range(16))) == [200] * 16
    samples = _metrics(server.url)
    assert samples[key] - before == 16
    assert samples['triage_errors_total{reason="unsupported_type"}'] >= 16
    assert samples["triage_batch_requests_sum"] >= 16
    assert any(k.startswith("triage_model{") and 'provider="CPUExecutionProvider"' in k for k in samples)


def test_a_client_hanging_up_mid_upload_is_counted_499_and_the_service_goes_on(
    server: Served, photos: dict[str, bytes]
) -> None:
    body = b"".join([b"--b0\r\nContent-Disposition: form-data; name=file; filename=a.jpg\r\n\r\n", photos["jpeg"] * 40])
    head = (
        f"POST /v1/route HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: {len(body) * 2}\r\n\r\n"
    )
    before = _metrics(server.url)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + body)  # half of what the header announces, then hang up
        _wait_until_in_flight(server.url, "/v1/route", 1)  # the service has started on it
    deadline = time.monotonic() + PATIENCE_S
    key = 'triage_http_requests_total{endpoint="/v1/route",status="499"}'
    while (samples := _metrics(server.url)).get(key, 0) == before.get(key, 0):
        assert time.monotonic() < deadline, "the hang-up was never counted"
        time.sleep(0.1)
    assert samples[key] - before.get(key, 0) == 1
    gone = 'triage_errors_total{reason="client_disconnected"}'
    assert samples[gone] - before.get(gone, 0) == 1
    assert not [k for k in samples if k.startswith('triage_http_requests_total{endpoint="/v1/route",status="5')]
    photo = [("file", ("a.jpg", photos["jpeg"]))]
    response = httpx.post(server.url + "/v1/route", files=photo, headers={"X-API-Key": KEY}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200


def test_tampered_model_refuses_to_start(random_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(random_model_dir, model_dir)
    onnx = model_dir / "triage.onnx"
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    done = subprocess.run(
        [sys.executable, "-m", "triage_cli", "serve"],
        cwd=ROOT,
        env=server_env(onnx, free_port()),
        capture_output=True,
        timeout=PATIENCE_S,
    )
    assert done.returncode != 0
    assert "sha256" in done.stderr.decode() and "refusing to serve" in done.stderr.decode()


def test_cuda_without_a_gpu_refuses_to_start(random_model_dir: Path) -> None:
    env = server_env(random_model_dir / "triage.onnx", free_port(), TRIAGE_DEVICE="cuda", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "triage_cli", "serve"], cwd=ROOT, env=env, capture_output=True, timeout=PATIENCE_S
    )
    assert done.returncode != 0
    assert "device=cuda" in done.stderr.decode()


def _wait_until_in_flight(url: str, endpoint: str, n: int, timeout: float = PATIENCE_S) -> None:
    """Poll ``/metrics`` until the server is handling at least ``n`` requests to ``endpoint``."""
    pattern = re.compile(rf'^triage_requests_in_flight{{endpoint="{re.escape(endpoint)}"}} (\S+)$', re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(httpx.get(url + "/metrics", timeout=HTTP_TIMEOUT).text)
        if found and float(found.group(1)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} requests to {endpoint} in flight after {timeout} s")


def _big_png() -> bytes:
    y, x = np.mgrid[0:2000, 0:3000].astype(np.float32)
    rgb = np.stack([x / 3000 * 255, y / 2000 * 255, (x + y) / 5000 * 255], axis=-1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG", compress_level=1)
    return out.getvalue()


DRAIN_S = 7.0  # TRIAGE_DRAIN_TIMEOUT of the SIGTERM test


def _start_upload(served: Served, photo: bytes, name: str) -> tuple[socket.socket, bytes]:
    """Open a ``POST /v1/route`` of one photo and send all of it but its last bytes; returns the connection and
    the bytes still to send. Until they are sent the request is in flight and waiting, however fast the machine."""
    body = b"".join(
        [
            f"--b0\r\nContent-Disposition: form-data; name=file; filename={name}\r\n\r\n".encode(),
            photo,
            b"\r\n--b0--\r\n",
        ]
    )
    head = (
        f"POST /v1/route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=b0\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=PATIENCE_S)
    sock.sendall(head.encode() + body[:-100])
    return sock, body[-100:]


def _finish_upload(sock: socket.socket, rest: bytes) -> int | str:
    """Send the rest of the request and read its answer's status (or say what happened to the connection)."""
    with sock:
        try:
            sock.sendall(rest)
            with sock.makefile("rb") as answer:
                return int(answer.readline().split()[1])
        except (OSError, IndexError) as exc:
            return repr(exc)


@pytest.mark.parametrize("target", ["main process", "process group"])
def test_sigterm_answers_requests_in_flight_and_leaves_no_process(
    random_model_dir: Path, serve: Serve, photos: dict[str, bytes], target: str
) -> None:
    """Three requests are in flight at SIGTERM (their uploads not yet complete); they complete after it, within the
    drain time, and are answered 200; the service then exits 0 and no process of it is left."""
    served = serve(random_model_dir / "triage.onnx", TRIAGE_DRAIN_TIMEOUT=str(DRAIN_S))
    assert len(served.members()) >= 4, served.members()  # main, queue manager, worker, HTTP server
    uploads = [_start_upload(served, photos["jpeg"], f"{i}.jpg") for i in range(3)]
    _wait_until_in_flight(served.url, "/v1/route", 3)  # accepted by the server, not just sent
    if target == "main process":
        os.kill(served.pgid, signal.SIGTERM)
    else:
        os.killpg(served.pgid, signal.SIGTERM)
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda upload: _finish_upload(*upload), uploads))
    assert statuses == [200] * 3, served.tail()
    # It stops taking connections: at once when the HTTP process has the signal, which with SIGTERM to the main
    # process alone can come after the three answers on a loaded machine (the main process forwards it).
    deadline = time.monotonic() + PATIENCE_S
    while True:
        try:
            httpx.get(served.url + "/health", timeout=HTTP_TIMEOUT)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, f"still taking connections {PATIENCE_S} s after SIGTERM\n{served.tail()}"
        time.sleep(0.1)
    assert served.proc.wait(timeout=PATIENCE_S) == 0, served.tail()
    _wait_until_the_group_is_gone(served)


def _busiest_worker(served: Served, sample_s: float = 1.0, patience_s: float = PATIENCE_S) -> int:
    """The inference worker that gains the most CPU time over ``sample_s``: under route load, the route worker.
    Samples again while no worker gains any (on a loaded machine the uploads may not have arrived yet)."""
    deadline = time.monotonic() + patience_s
    while True:
        pid, gained = _most_cpu(served, sample_s)
        if gained > 0 or time.monotonic() > deadline:
            return pid


def _inference_workers(served: Served) -> list[int]:
    return [pid for pid, command in served.members().items() if "spawn_main" in command]


def _most_cpu(served: Served, sample_s: float) -> tuple[int, int]:
    workers = _inference_workers(served)

    def ticks(pid: int) -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])

    before = {pid: ticks(pid) for pid in workers}
    time.sleep(sample_s)
    gains = {pid: ticks(pid) - before[pid] for pid in workers}
    busiest = max(gains, key=gains.__getitem__)
    return busiest, gains[busiest]


def _wait_until_the_group_is_gone(served: Served) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while served.members() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.members() == {}, served.tail()


@pytest.mark.parametrize("transport", ["PacketTransport", "MPQueueTransport"])
def test_a_killed_inference_worker_is_restarted_in_place(random_model_dir: Path, serve: Serve, transport: str) -> None:
    """kill -9 the route worker with requests in flight: they are answered (503 for those it had taken) before the
    request timeout, the service stays up and routes again; a second death within the restart window is one more
    than TRIAGE_WORKER_RESTARTS=1 allows, and the service exits 1 leaving no process behind. Requests and answers
    through packet pipes (the default) or LitServe's queue manager."""
    timeout = 120.0  # the request timeout: answers come long before it, even on a loaded machine
    served = serve(
        random_model_dir / "triage.onnx",
        TRIAGE_REQUEST_TIMEOUT=str(timeout),
        TRIAGE_WORKER_RESTARTS="1",
        TRIAGE_PACKET_PIPES=str(transport == "PacketTransport").lower(),
    )
    assert served.logged(f"requests and answers through {transport}"), served.output()
    photo = _big_png()

    def send(i: int) -> tuple[Any, float, str]:
        files = [("file", (f"{i}-{k}.png", photo)) for k in range(8)]
        started = time.monotonic()
        try:
            response = httpx.post(served.url + "/v1/route", files=files, timeout=timeout + PATIENCE_S)
            retry = response.headers.get("retry-after")
            assert (retry == "1") == (response.status_code == 503), (response.status_code, response.headers)
            return response.status_code, time.monotonic() - started, response.text
        except httpx.TransportError as exc:
            return repr(exc), time.monotonic() - started, ""

    assert len(_inference_workers(served)) == 2  # route and explain workers
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(send, i) for i in range(3)]
        victim = _busiest_worker(served, 0.5)
        assert not all(f.done() for f in futures), "the requests finished before the kill; make them heavier"
        os.kill(victim, signal.SIGKILL)
        results = [f.result() for f in futures]
    for status, _, text in results:
        # answered by the service (a 503 for the lost requests), not by the request timeout's 504
        assert status in (200, 503), (results, served.tail())
        if status == 503:
            assert "inference worker" in json.loads(text)["detail"]
    assert 503 in [status for status, _, _ in results], results  # the killed worker had taken work
    assert served.proc.poll() is None, served.tail()
    deadline = time.monotonic() + PATIENCE_S
    while httpx.get(served.url + "/health", timeout=HTTP_TIMEOUT).status_code != 200:
        assert time.monotonic() < deadline, served.tail()
        time.sleep(0.2)
    assert send(99)[0] == 200, served.tail()
    assert victim not in served.members()
    samples = _metrics(served.url)
    assert samples['triage_worker_restarts_total{endpoint="/v1/route"}'] == 1
    assert samples['triage_worker_restarts_total{endpoint="/v1/explain"}'] == 0
    assert served.logged("restarted it as pid") and served.logged("ready again"), served.output()

    os.kill(_inference_workers(served)[0], signal.SIGKILL)
    assert served.proc.wait(timeout=PATIENCE_S) == 1, served.tail()
    _wait_until_the_group_is_gone(served)
    assert served.logged("more than 1 worker restarts"), served.output()
    assert not list(Path("/dev/shm").glob(f"triage-held-{served.pgid}-*"))  # the workers' records went with it


def test_losing_the_queue_manager_stops_the_service(random_model_dir: Path, serve: Serve) -> None:
    """Once every worker is ready the supervisor no longer asks the queue manager for their status; it still
    notices the manager's death and stops, exit status 1, leaving no process behind."""
    from bench.soak import process_roles

    served = serve(random_model_dir / "triage.onnx")
    roles = process_roles(served.pgid, served.port)
    managers = [pid for pid, role in roles.items() if role == "queue manager"]
    assert len(managers) == 1, roles
    os.kill(managers[0], signal.SIGKILL)
    assert served.proc.wait(timeout=PATIENCE_S) == 1, served.tail()
    assert served.logged("lost the queue manager"), served.output()
    _wait_until_the_group_is_gone(served)


def test_killing_the_supervisor_outright_takes_every_process_with_it(random_model_dir: Path, serve: Serve) -> None:
    """kill -9 of ``triage serve`` itself: nothing is left holding the port or waiting for requests (the kernel
    kills each child when its parent dies, ``service.parent_death``)."""
    served = serve(random_model_dir / "triage.onnx")
    assert len(served.members()) >= 6, served.members()  # HTTP, workers, manager, tracker
    os.kill(served.pgid, signal.SIGKILL)
    served.proc.wait(timeout=PATIENCE_S)
    _wait_until_the_group_is_gone(served)
    with pytest.raises(httpx.TransportError):
        httpx.get(served.url + "/health", timeout=HTTP_TIMEOUT)
