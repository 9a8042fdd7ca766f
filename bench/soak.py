"""Soak: a real ``triage serve`` under steady load for minutes, then SIGTERM with requests in flight.

    .venv/bin/python bench/soak.py [--seconds 600] [--concurrency 64] [--config threads=2] [--drain-timeout 6]

Starts ``triage serve`` in its own process group and drives ``POST /v1/route`` on loopback with
``bench.service_load``'s keep-alive client, generated JPEGs of both classes (a quarter 4032x3024, the rest 640x480).
Reports errors (non-200, no route), latency overall and per ``--bucket`` seconds, and the RSS of every process of
the group every ``--rss-every`` seconds (start after the warm-up, end, least-squares slope over the second half).
Then SIGTERMs the main process under the same load: what became of the requests in flight, time to exit, exit
status, processes left. Prints markdown tables; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.process_stats import group_members  # noqa: E402
from bench.service_load import (  # noqa: E402
    SIZES,
    ServerConfig,
    _exchange,
    _render,
    percentile,
    route_request,
    run_load,
    start_server,
    stop_server,
)

MIB = 1024 * 1024
Record = tuple[float, float, str]  # perf_counter start, end, outcome ("200" or how it failed)
FAILURES: dict[type[BaseException], str] = {
    ConnectionRefusedError: "connection refused",
    ConnectionResetError: "connection reset",
}
FAILURES |= {BrokenPipeError: "connection reset", asyncio.IncompleteReadError: "closed without a (whole) answer"}


def render_requests(phone: int, small: int) -> list[bytes]:
    """``POST /v1/route`` requests for distinct photos of both classes, phone-sized ones spread evenly."""
    jobs = [(i, SIZES["4032x3024"]) for i in range(phone)] + [(phone + i, SIZES["640x480"]) for i in range(small)]
    with mp.get_context("fork").Pool(2) as pool:
        photos = pool.map(_render, jobs)
    order = sorted(range(len(jobs)), key=lambda i: i / phone if i < phone else (i - phone) / small)
    return [route_request(photos[i], n) for n, i in enumerate(order)]


def _sockets(table: str, inode: int, keep: Callable[[list[str]], bool]) -> set[str]:
    """``socket:[inode]`` of the rows of a ``/proc/net`` table that ``keep`` selects."""
    try:
        rows = [line.split() for line in Path(table).read_text().splitlines()[1:]]
    except OSError:
        return set()
    return {f"socket:[{cols[inode]}]" for cols in rows if keep(cols)}


def process_roles(pgid: int, port: int) -> dict[int, str]:
    """Names each process of the group: main, resource tracker, queue manager (listens on multiprocessing's Unix
    socket), HTTP worker (holds the TCP listening socket), inference worker (spawned)."""
    tcp = _sockets("/proc/net/tcp", 9, lambda c: c[3] == "0A" and int(c[1].rsplit(":", 1)[1], 16) == port)
    unix = _sockets("/proc/net/unix", 6, lambda c: c[3] == "00010000" and "pymp-" in (c[7:] or [""])[0])
    roles = {}
    for pid, _ in group_members(pgid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            fds = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        except OSError:
            continue
        checks = [
            (pid == pgid, "main"),
            (b"resource_tracker" in command, "resource tracker"),
            (bool(fds & unix), "queue manager"),
            (bool(fds & tcp), "HTTP worker"),
            (b"spawn_main" in command, "inference worker"),
        ]
        roles[pid] = next((role for hit, role in checks if hit), "other")
    return roles


def rss_mib(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, IndexError, ValueError):
        return None


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points over their second half in time, in MiB/min."""
    half = [p for p in points if p[0] >= (points[0][0] + points[-1][0]) / 2] if points else []
    return float(np.polyfit(np.array(half)[:, 0] / 60, np.array(half)[:, 1], 1)[0]) if len(half) > 1 else float("nan")


@dataclass
class Soak:
    records: list[Record] = field(default_factory=list)
    t_start: float = 0.0  # perf_counter at the end of the warm-up
    seconds: float = 0.0
    roles: dict[int, str] = field(default_factory=dict)
    rss: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # pid -> (s since t_start, MiB)
    failure: str = ""  # the load generator itself broke (e.g. the server went away)
    server_cpu: float = float("nan")

    @property
    def errors(self) -> Counter[str]:
        return Counter(outcome for _, _, outcome in self.records if outcome != "200")

    def sample_rss(self, pgid: int) -> None:
        now = time.perf_counter() - self.t_start
        for pid, _ in group_members(pgid):
            if (mib := rss_mib(pid)) is not None:
                self.rss.setdefault(pid, []).append((now, mib))


def soak(proc: subprocess.Popen[bytes], port: int, requests: list[bytes], args: argparse.Namespace) -> Soak:
    """``args.concurrency`` clients for ``args.warmup`` + ``args.seconds``, RSS sampled every ``args.rss_every``."""
    out = Soak(seconds=args.seconds)
    load_args = argparse.Namespace(warmup=args.warmup, seconds=args.seconds)

    async def sampler() -> None:
        await asyncio.sleep(args.warmup)
        out.t_start = time.perf_counter()
        out.roles = process_roles(proc.pid, port)
        while time.perf_counter() < out.t_start + args.seconds:
            out.sample_rss(proc.pid)
            await asyncio.sleep(min(args.rss_every, max(0.0, out.t_start + args.seconds - time.perf_counter())))

    async def both() -> None:
        task = asyncio.create_task(sampler())
        try:
            record = out.records.append
            load = await run_load(port, requests, args.concurrency, load_args, proc.pid, lambda *r: record(r))
            out.server_cpu = load.server_cpu
        except (OSError, asyncio.IncompleteReadError) as exc:
            out.failure = f"load stopped: {exc!r}; server exit status {proc.poll()}"
        await task
        out.sample_rss(proc.pid)

    asyncio.run(both())
    return out


def table(head: list[str], rows: list[list[str]]) -> None:
    """Prints a markdown table; columns after the first are right-aligned."""
    print("| " + " | ".join(head) + " |\n|---|" + "---:|" * (len(head) - 1))
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))


def _ms(latencies: list[float]) -> list[str]:
    return [f"{percentile(latencies, q) * 1e3:.0f}" for q in (50, 99, 100)]


def _rss_row(name: str, pid: str, points: list[tuple[float, float]]) -> list[str]:
    start, end = points[0][1], points[-1][1]
    return [name, pid, f"{start:.1f}", f"{end:.1f}", f"{end - start:+.1f}", f"{slope_per_min(points):+.2f}"]


def print_soak(result: Soak, bucket: float) -> None:
    ok = [(t0 - result.t_start, t1 - t0) for t0, t1, o in result.records if o == "200" and t0 >= result.t_start]
    measured, errors = sorted(ok), sum(result.errors.values())
    print(f"\n### Soak: {result.seconds:g} s after a warm-up\n")
    head = ["requests (warm-up included)", "errors", "measured", "photos/s", "p50 ms", "p99 ms", "max ms", "server CPU"]
    cells = [len(result.records), errors, len(measured), f"{len(measured) / result.seconds:.1f}"]
    table(head, [[*map(str, cells), *_ms([x for _, x in measured]), f"{result.server_cpu:.2f}"]])
    if errors or result.failure:
        print(f"\nerrors by kind: {dict(result.errors)} {result.failure}")
    print(f"\nLatency of the measured requests by start time, {bucket:g}-s rows:\n")
    rows = []
    for k, group in itertools.groupby(measured, key=lambda m: int(m[0] // bucket)):
        rows.append([f"{k * bucket:g}", str(len(b := [x for _, x in group])), *_ms(b)])
    table(["from s", "requests", "p50 ms", "p99 ms", "max ms"], rows)
    samples = max(map(len, result.rss.values()), default=0)
    print(f"\nRSS (MiB) of every process of the server's group, {samples} samples; slope over the second half:\n")
    rows, total = [], Counter[float]()
    for pid, points in sorted(result.rss.items(), key=lambda kv: (result.roles.get(kv[0], "~"), kv[0])):
        total.update(dict(points))
        rows.append(_rss_row(result.roles.get(pid, "appeared later"), str(pid), points))
    if total:
        rows.append(_rss_row("**all**", "", sorted(total.items())))
    table(["process", "pid", "start", "end", "change", "MiB/min"], rows)


@dataclass
class Sigterm:
    records: list[Record] = field(default_factory=list)
    t_signal: float = 0.0
    exit_s: float = float("nan")  # from SIGTERM to the main process's exit
    exit_status: int | None = None
    left: list[int] = field(default_factory=list)  # live processes of the group after the exit (+ a grace period)

    def outcomes(self, in_flight: bool) -> Counter[str]:
        """In flight: sent before SIGTERM, not answered by then; otherwise: started after SIGTERM."""
        if in_flight:
            return Counter(o for t0, t1, o in self.records if t0 < self.t_signal < t1)
        return Counter(o for t0, _, o in self.records if t0 >= self.t_signal)


async def _client(port: int, photos: itertools.cycle[bytes], out: Sigterm, stop: asyncio.Event) -> None:
    """Keep-alive requests until ``stop``; reconnects after a failure, gives up once connections are refused."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            status, body = await asyncio.wait_for(_exchange(*conn, next(photos)), 60)
            outcome = "200" if status == 200 and b'"route"' in body else f"HTTP {status}"
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            outcome = FAILURES.get(type(exc), type(exc).__name__)
        out.records.append((t0, time.perf_counter(), outcome))
        if outcome != "200" and conn is not None:
            conn[1].close()
            conn = None
        if outcome == "connection refused":
            break
    if conn is not None:
        conn[1].close()


def sigterm_under_load(
    proc: subprocess.Popen[bytes], port: int, requests: list[bytes], concurrency: int, lead: float
) -> Sigterm:
    """Load for ``lead`` seconds, SIGTERM to the main process, load on until it exits; then look for leftovers."""
    out = Sigterm()
    pgid = proc.pid

    async def run() -> None:
        stop = asyncio.Event()
        photos = itertools.cycle(requests)
        tasks = [asyncio.create_task(_client(port, photos, out, stop)) for _ in range(concurrency)]
        await asyncio.sleep(lead)
        out.t_signal = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):  # already gone: the checks will say so
            os.kill(proc.pid, signal.SIGTERM)
        try:
            out.exit_status = await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
            out.exit_s = time.perf_counter() - out.t_signal
        except TimeoutError:
            pass
        stop.set()
        await asyncio.gather(*tasks)

    try:
        asyncio.run(run())
    finally:
        deadline = time.monotonic() + 5
        while (left := group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        out.left = left
        if proc.poll() is None or left:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stop_server(proc)
    return out


def print_sigterm(result: Sigterm, concurrency: int) -> None:
    print(f"\n### SIGTERM to the main process with {concurrency} clients sending\n")
    done_before = sum(1 for _, t1, _ in result.records if t1 <= result.t_signal)
    rows = [["answered before SIGTERM", str(done_before), "", ""]]
    for name, in_flight in (("in flight at SIGTERM", True), ("started after SIGTERM", False)):
        counts = result.outcomes(in_flight)
        failed = ", ".join(f"{n} {how}" for how, n in counts.most_common() if how != "200") or "none"
        rows.append([name, str(sum(counts.values())), str(counts["200"]), failed])
    table(["requests", "count", "answered 200", "failed (how)"], rows)
    last = max((t1 for _, t1, o in result.records if o == "200"), default=result.t_signal) - result.t_signal
    print(f"\nlast 200 answered {last:.2f} s after SIGTERM; main process exited after {result.exit_s:.2f} s")
    print(f"with status {result.exit_status}; processes of the group left: {result.left or 'none'}")


def checks(soaked: Soak, stopped: Sigterm) -> list[tuple[str, bool]]:
    in_flight = stopped.outcomes(in_flight=True)
    return [
        ("soak: no errors (non-200, no route, connection failures)", not soaked.errors and not soaked.failure),
        ("soak: RSS sampled for every process", bool(soaked.roles) and soaked.roles.keys() <= soaked.rss.keys()),
        ("SIGTERM: requests were in flight", sum(in_flight.values()) > 0),
        ("SIGTERM: every request in flight answered 200", in_flight["200"] == sum(in_flight.values())),
        ("SIGTERM: exit status 0", stopped.exit_status == 0),
        ("SIGTERM: no process of the group left", not stopped.left),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx")
    parser.add_argument("--config", type=ServerConfig.parse, default=ServerConfig(), help="server settings")
    parser.add_argument("--drain-timeout", type=float, default=6.0, help="TRIAGE_DRAIN_TIMEOUT, seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=600.0, help="measured seconds of load")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds of load first")
    parser.add_argument("--pool", type=int, nargs=2, default=[8, 24], help="distinct photos: phone, small")
    parser.add_argument("--bucket", type=float, default=60.0, help="seconds per row of the latency table")
    parser.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--sigterm-after", type=float, default=3.0, help="seconds of load before SIGTERM")
    parser.add_argument("--log", type=Path, default=Path("/tmp/soak_serve.log"), help="the server's output")
    args = parser.parse_args()
    requests = render_requests(*args.pool)
    env = {"TRIAGE_DRAIN_TIMEOUT": f"{args.drain_timeout:g}"}
    proc, port = start_server(args.model.resolve(), args.config, args.log, env)
    print(f"{args.model.name}, {args.config} drain_timeout={args.drain_timeout:g}s, {args.concurrency} clients,")
    print(f"{args.pool[0]} 4032x3024 + {args.pool[1]} 640x480 JPEGs, {os.cpu_count()} cores; server log {args.log}")
    try:
        soaked = soak(proc, port, requests, args)
        print_soak(soaked, args.bucket)
        stopped = sigterm_under_load(proc, port, requests, args.concurrency, args.sigterm_after)
        print_sigterm(stopped, args.concurrency)
    finally:
        stop_server(proc)
    results = checks(soaked, stopped)
    print()
    table(["check", "result"], [[name, "pass" if ok else "**FAIL**"] for name, ok in results])
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
