"""Kill -9 one inference worker of ``triage serve`` under load: what clients see, and how long until it answers again.

    .venv/bin/python bench/worker_kill.py [--model artifacts/triage.onnx] [--concurrency 16] [--before 10] \
        [--after 40] [--request-timeout 10]

The supervisor restarts a dead inference worker in place (docs/DEPLOY.md): same port, the HTTP processes stay up,
the requests the dead worker had taken are answered 503, queued ones wait for the new worker. This script starts
``triage serve`` once while N client threads post generated 640x480 JPEGs to ``POST /v1/route`` throughout and a
probe asks ``/health`` every 50 ms. After ``--before`` seconds it SIGKILLs the route endpoint's inference worker (the
worker whose CPU time grows under route load), keeps the load on for ``--after`` seconds, then stops the service
with SIGTERM.

Prints, in markdown: the success rate before the kill; how each request in flight at the kill ended and how long
it took; whether any request took longer than the request timeout (a hang); when ``/health`` turned 503 and 200
again; the time from the kill to the first 200 answer to a request sent after it and to the start of the unbroken
run of 200s that lasts to the end; the success rate over the last 10 seconds; ``triage_worker_restarts_total``;
whether the service stayed up, its exit status on SIGTERM and any process it left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.process_stats import free_port, group_members  # noqa: E402

SERVE = [sys.executable, "-m", "triage_cli", "serve"]
KEY = "bench-key"
RESTARTS = "triage_worker_restarts_total"


@dataclass
class Request:
    start: float
    end: float
    outcome: str  # the HTTP status, or the transport error's class name


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    still_up: bool = False  # running when the load stopped
    exit_code: int | None = None  # after SIGTERM
    left_behind: tuple[str, ...] = ()


def inference_workers(pgid: int) -> list[int]:
    return [pid for pid, command in group_members(pgid) if "spawn_main" in command]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def route_worker(pgid: int, sample_s: float = 1.0) -> int:
    """The inference worker busiest over ``sample_s`` under route-only load: the route endpoint's."""
    workers = inference_workers(pgid)
    if not workers:
        raise RuntimeError(f"no inference worker in process group {pgid}: {group_members(pgid)}")
    before = {pid: cpu_ticks(pid) for pid in workers}
    time.sleep(sample_s)
    return max(workers, key=lambda pid: cpu_ticks(pid) - before[pid])


def start(env: dict[str, str], url: str, log: Path, timeout: float = 120) -> Service:
    with log.open("ab") as out:
        proc = subprocess.Popen(SERVE, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"triage serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Service(proc)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"triage serve never became healthy; see {log}")


def stop(service: Service) -> None:
    service.still_up = service.proc.poll() is None
    if service.still_up:
        service.proc.send_signal(signal.SIGTERM)
        try:
            service.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait()
    service.exit_code = service.proc.returncode
    deadline = time.monotonic() + 10
    while group_members(service.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    service.left_behind = tuple(command[:80] for _, command in group_members(service.proc.pid))


def probe_health(url: str, stop: threading.Event, out: list[tuple[float, str]]) -> None:
    with httpx.Client(base_url=url, timeout=2) as client:
        while not stop.is_set():
            try:
                outcome = str(client.get("/health").status_code)
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
            out.append((time.monotonic(), outcome))
            time.sleep(0.05)


def load(url: str, photos: list[bytes], client_timeout: float, stop: threading.Event, out: list[Request]) -> None:
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=client_timeout) as client:
        i = 0
        while not stop.is_set():
            start = time.monotonic()
            try:
                files = {"file": (f"{i}.jpg", photos[i % len(photos)], "image/jpeg")}
                outcome = str(client.post("/v1/route", files=files).status_code)
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
                time.sleep(0.05)  # a refused connection returns at once; do not spin
            out.append(Request(start, time.monotonic(), outcome))
            i += 1


def restarts(url: str) -> str:
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.TransportError as exc:
        return type(exc).__name__
    lines = [line.removeprefix(RESTARTS) for line in text.splitlines() if line.startswith(RESTARTS + "{")]
    return ", ".join(sorted(lines)) or "not exported"


def make_photos(n: int = 16) -> list[bytes]:
    from model.synth import render_photo

    labels = ("screen_damage", "general_returns")
    return [render_photo(seed, labels[seed % 2], split="test", size=(640, 480)).encode() for seed in range(n)]


def tally(requests: list[Request]) -> str:
    counts: dict[str, int] = {}
    for r in requests:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


@dataclass
class Kill:
    at: float
    victim: int
    successor: list[int]
    restarts: str


def report(
    requests: list[Request], health: list[tuple[float, str]], kill: Kill, service: Service, timeout: float
) -> None:
    killed = kill.at
    requests = sorted(requests, key=lambda r: r.start)
    before = [r for r in requests if r.end < killed]
    in_flight = [r for r in requests if r.start <= killed <= r.end]
    after = [r for r in requests if r.start > killed]
    end = max(r.end for r in requests)
    tail = [r for r in requests if r.start > end - 10]
    first_ok = next((r for r in after if r.outcome == "200"), None)
    unbroken = None
    for r in reversed(after):
        if r.outcome != "200":
            break
        unbroken = r
    longest = max(r.end - r.start for r in requests)
    not_ready = next((t for t, outcome in health if t > killed and outcome != "200"), None)
    ready_again = next(
        (t for t, outcome in health if not_ready is not None and t > not_ready and outcome == "200"), None
    )

    def since(t: float | None) -> str:
        return "never" if t is None else f"{t - killed:.2f} s"

    rows = [
        ("inference worker killed (SIGKILL)", f"pid {kill.victim}; new worker pid {kill.successor or 'none'}"),
        ("requests before the kill", f"{len(before)} ({tally(before)})"),
        ("requests in flight at the kill", f"{len(in_flight)} ({tally(in_flight)})"),
        (
            "in-flight: outcome, time after the kill",
            ", ".join(f"{r.outcome} {r.end - killed:.2f} s" for r in in_flight) or "-",
        ),
        ("longest request", f"{longest:.2f} s (request timeout {timeout:g} s; over it: {longest > timeout})"),
        ("/health not 200 from", since(not_ready)),
        ("/health 200 again", since(ready_again)),
        ("first 200 to a request sent after the kill", since(first_ok.end if first_ok else None)),
        ("unbroken 200s from", since(unbroken.start if unbroken else None)),
        ("requests after the kill", f"{len(after)} ({tally(after)})"),
        ("last 10 s", f"{len(tail)} requests, {sum(r.outcome == '200' for r in tail) / max(1, len(tail)):.1%} 200"),
        (RESTARTS, kill.restarts),
        ("service up until the end", "yes" if service.still_up else f"no (exit status {service.exit_code})"),
        ("exit status on SIGTERM, processes left", f"{service.exit_code}, {list(service.left_behind) or 'none'}"),
    ]
    print("| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=40.0, help="seconds of load after the kill")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="TRIAGE_REQUEST_TIMEOUT")
    parser.add_argument("--log", type=Path, default=Path("/tmp/worker_kill_serve.log"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        TRIAGE_MODEL_PATH=str(args.model.resolve()),
        TRIAGE_HOST="127.0.0.1",
        TRIAGE_PORT=str(port),
        TRIAGE_API_KEY=KEY,
        TRIAGE_REQUEST_TIMEOUT=str(args.request_timeout),
        TRIAGE_LOG_LEVEL="warning",
        PYTHONPATH=str(ROOT),
    )
    args.log.write_bytes(b"")
    photos = make_photos()
    service = start(env, url, args.log)
    requests: list[Request] = []
    health: list[tuple[float, str]] = []
    stopping = threading.Event()
    clients = [
        threading.Thread(target=load, args=(url, photos, args.request_timeout + 20, stopping, requests), daemon=True)
        for _ in range(args.concurrency)
    ]
    clients.append(threading.Thread(target=probe_health, args=(url, stopping, health), daemon=True))
    try:
        for thread in clients:
            thread.start()
        time.sleep(max(0.0, args.before - 1.0))
        pgid = service.proc.pid
        workers = set(inference_workers(pgid))
        victim = route_worker(pgid)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(args.after)
        kill = Kill(killed, victim, sorted(set(inference_workers(pgid)) - workers), restarts(url))
    finally:
        stopping.set()
        for thread in clients:
            thread.join(timeout=args.request_timeout + 25)
        stop(service)
    print(f"concurrency {args.concurrency}, {args.before:g} s of load before the kill, {args.after:g} s after it\n")
    report(requests, health, kill, service, args.request_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
