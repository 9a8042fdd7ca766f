"""Kill -9 one inference worker of ``triage serve`` under load: what clients see, and how long until it answers again.

    .venv/bin/python bench/worker_kill.py [--model artifacts/triage.onnx] [--concurrency 16] [--before 10] \
        [--after 40] [--request-timeout 10]

The service fails fast by design (docs/DEPLOY.md): when a process dies, the supervisor stops every process and
exits with status 1, and the container's restart policy starts it again. This script plays that restart policy
(it starts ``triage serve`` again on the same port as soon as it exits, like ``docker run --restart always``
without back-off) while N client threads post generated 640x480 JPEGs to ``POST /v1/route`` throughout. After
``--before`` seconds it SIGKILLs the route endpoint's inference worker (the worker whose CPU time grows under route
load) and keeps the load on for ``--after`` seconds.

Prints, in markdown: the success rate before the kill; how each request in flight at the kill ended and how long
it took; whether any request took longer than the request timeout (a hang); the time from the kill to the old
service's exit, to ``/health`` 200 from the restarted one, to its first 200 answer and to the start of the unbroken
run of 200s that lasts to the end; the success rate over the last 10 seconds; processes of the old instance left.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVE = [sys.executable, "-m", "service.cli", "serve"]
KEY = "bench-key"


@dataclass
class Request:
    start: float
    end: float
    outcome: str  # the HTTP status, or the transport error's class name


@dataclass
class Instance:
    proc: subprocess.Popen[bytes]
    started: float
    healthy: float | None = None
    exited: float | None = None
    exit_code: int | None = None
    left_behind: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a process group: ``(pid, command)``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(stat.parent.name), command))
    return members


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def route_worker(pgid: int, sample_s: float = 1.0) -> int:
    """The inference worker busiest over ``sample_s`` under route-only load: the route endpoint's."""
    workers = [pid for pid, command in group_members(pgid) if "spawn_main" in command]
    if not workers:
        raise RuntimeError(f"no inference worker in process group {pgid}: {group_members(pgid)}")
    before = {pid: cpu_ticks(pid) for pid in workers}
    time.sleep(sample_s)
    return max(workers, key=lambda pid: cpu_ticks(pid) - before[pid])


class RestartPolicy:
    """Runs ``triage serve``; whenever it exits, notes how and starts it again, until stopped."""

    def __init__(self, env: dict[str, str], url: str, log: Path) -> None:
        self.env, self.url, self.log = env, url, log
        self.instances: list[Instance] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _start(self) -> Instance:
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                SERVE, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        instance = Instance(proc, time.monotonic())
        self.instances.append(instance)
        return instance

    def _run(self) -> None:
        while not self.stopping.is_set():
            instance = self.instances[-1] if self.instances else self._start()
            while instance.proc.poll() is None and not self.stopping.is_set():
                if instance.healthy is None:
                    try:
                        if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                            instance.healthy = time.monotonic()
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
            if self.stopping.is_set():
                return
            instance.exited, instance.exit_code = time.monotonic(), instance.proc.returncode
            deadline = time.monotonic() + 10
            while group_members(instance.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            instance.left_behind = [command[:80] for _, command in group_members(instance.proc.pid)]
            self._start()

    def wait_healthy(self, timeout: float = 120) -> Instance:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.instances and self.instances[-1].healthy is not None:
                return self.instances[-1]
            time.sleep(0.1)
        raise RuntimeError(f"triage serve never became healthy; see {self.log}")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        for instance in self.instances:
            if instance.proc.poll() is None:
                instance.proc.send_signal(signal.SIGTERM)
                try:
                    instance.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(instance.proc.pid, signal.SIGKILL)
                    instance.proc.wait()


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


def make_photos(n: int = 16) -> list[bytes]:
    from model.synth import render_photo

    labels = ("screen_damage", "general_returns")
    return [render_photo(seed, labels[seed % 2], split="test", size=(640, 480)).encode() for seed in range(n)]


def tally(requests: list[Request]) -> str:
    counts: dict[str, int] = {}
    for r in requests:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def report(requests: list[Request], instances: list[Instance], killed: float, victim: int, timeout: float) -> None:
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
    old, new = instances[0], (instances[1] if len(instances) > 1 else None)
    longest = max(r.end - r.start for r in requests)

    def since(t: float | None) -> str:
        return "never" if t is None else f"{t - killed:.2f} s"

    rows = [
        ("inference worker killed (SIGKILL)", f"pid {victim}"),
        ("requests before the kill", f"{len(before)} ({tally(before)})"),
        ("requests in flight at the kill", f"{len(in_flight)} ({tally(in_flight)})"),
        ("in-flight durations after the kill", ", ".join(f"{r.end - killed:.2f} s" for r in in_flight) or "-"),
        ("longest request", f"{longest:.2f} s (request timeout {timeout:g} s; over it: {longest > timeout})"),
        ("old service exited", f"{since(old.exited)} after the kill, status {old.exit_code}"),
        ("old service's processes left", str(old.left_behind or "none")),
        ("restarted service /health 200", since(new.healthy if new else None)),
        ("first 200 after the kill", since(first_ok.end if first_ok else None)),
        ("unbroken 200s from", since(unbroken.start if unbroken else None)),
        ("requests after the kill", f"{len(after)} ({tally(after)})"),
        ("last 10 s", f"{len(tail)} requests, {sum(r.outcome == '200' for r in tail) / max(1, len(tail)):.1%} 200"),
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
    policy = RestartPolicy(env, url, args.log)
    policy.thread.start()
    requests: list[Request] = []
    stop = threading.Event()
    clients = [
        threading.Thread(target=load, args=(url, photos, args.request_timeout + 20, stop, requests), daemon=True)
        for _ in range(args.concurrency)
    ]
    try:
        first = policy.wait_healthy()
        for thread in clients:
            thread.start()
        time.sleep(max(0.0, args.before - 1.0))
        victim = route_worker(first.proc.pid)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        time.sleep(args.after)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=args.request_timeout + 25)
        policy.stop()
    print(f"concurrency {args.concurrency}, {args.before:g} s of load before the kill, {args.after:g} s after it\n")
    report(requests, policy.instances, killed, victim, args.request_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
