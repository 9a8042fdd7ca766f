"""Load benchmark: the in-process limit vs a real ``triage serve`` on loopback, for phone and small JPEGs.

    .venv/bin/python bench/service_load.py [--seconds 8] [--config workers=2,batch=8,timeout=0,threads=1 ...]

Renders distinct generated 4032x3024 and 640x480 JPEGs (untimed), measures the in-process limit (two processes,
one per core, each decoding, preprocessing and running ONNX Runtime on one thread over batches of B photos) and
in-process latency (one photo at a time), then for each ``--config`` starts ``triage serve`` in its own process
group and drives it from this process with an asyncio HTTP/1.1 client (keep-alive connections, requests built in
advance). Prints markdown tables. Config keys: workers (TRIAGE_WORKERS_PER_DEVICE), batch (TRIAGE_MAX_BATCH_SIZE),
timeout (TRIAGE_BATCH_TIMEOUT, seconds), threads (TRIAGE_ORT_THREADS, 0 = ONNX Runtime's choice), handoff (1: photos
reach the workers through TRIAGE_HANDOFF_DIR, the default; 0: through LitServe's request queue), pipes (1: requests
and answers through packet pipes, the default; 0: through LitServe's queue manager, TRIAGE_PACKET_PIPES=false).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.synth import render_photo  # noqa: E402
from service.inference.engine import TriageEngine  # noqa: E402
from service.inference.intake import IntakeLimits, read_photo  # noqa: E402

SIZES: dict[str, tuple[int, int]] = {"4032x3024": (4032, 3024), "640x480": (640, 480)}
SERVE = [sys.executable, "-m", "triage_cli", "serve"]
_PHOTOS: dict[str, list[bytes]] = {}  # inherited by forked in-process workers
_ENGINE: TriageEngine | None = None
SERVICE_HEAD = (
    "| photo | concurrency | photos/s | x in-process | p50 ms | p99 ms | errors | CPU server | client | other |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
InProcess = dict[str, tuple[float, float]]  # photo size -> (best photos/s, p99 latency in seconds)


@dataclass(frozen=True)
class ServerConfig:
    """Server settings under test; the defaults are the service's own."""

    workers: int = 2
    batch: int = 8
    timeout: float = 0.0
    threads: int = 1
    handoff: int = 1
    pipes: int = 1

    @classmethod
    def parse(cls, text: str) -> ServerConfig:
        fields = dict(item.split("=", 1) for item in text.split(",") if item)
        return cls(**{key: (float if key == "timeout" else int)(value) for key, value in fields.items()})

    def __str__(self) -> str:
        text = f"workers={self.workers} batch={self.batch} timeout={self.timeout * 1000:g}ms ort_threads={self.threads}"
        text = text if self.handoff else f"{text} handoff=off"
        return text if self.pipes else f"{text} pipes=off"


def _render(job: tuple[int, tuple[int, int]]) -> bytes:
    return render_photo(job[0], ("screen_damage", "general_returns")[job[0] % 2], split="test", size=job[1]).encode()


def _init_engine(model: Path, threads: int, batch: int) -> None:
    global _ENGINE
    _ENGINE = TriageEngine(model, device="cpu", threads=threads)
    _ENGINE.warm_up(sorted({1, batch}))


def _route_chunk(job: tuple[str, list[int]]) -> int:
    assert _ENGINE is not None
    name, indices = job
    tensors = [read_photo(_PHOTOS[name][i], _ENGINE.preprocessing, IntakeLimits())[0].tensor for i in indices]
    return len(_ENGINE.decide(_ENGINE.infer(np.stack(tensors))["logits"]))


def inprocess_throughput(model: Path, name: str, batch: int, total: int) -> float:
    """Photos/s with two processes, each decoding and inferring batches of ``batch`` photos on one ORT thread."""
    n = len(_PHOTOS[name])
    chunks = [(name, [(start + k) % n for k in range(batch)]) for start in range(0, max(total, 4 * batch), batch)]
    with mp.get_context("fork").Pool(2, initializer=_init_engine, initargs=(model, 1, batch)) as pool:
        pool.map(_route_chunk, chunks[:2], chunksize=1)  # warm both workers
        t0 = time.perf_counter()
        done = sum(pool.map(_route_chunk, chunks, chunksize=1))
        return done / (time.perf_counter() - t0)


def inprocess_latency(engine: TriageEngine, photos: list[bytes], repeat: int) -> list[float]:
    out = []  # seconds per photo, one at a time: decode + preprocess + inference at batch 1
    for i in range(repeat):
        t0 = time.perf_counter()
        prepared, _ = read_photo(photos[i % len(photos)], engine.preprocessing, IntakeLimits())
        engine.decide(engine.infer(prepared.tensor[np.newaxis])["logits"])
        out.append(time.perf_counter() - t0)
    return out


def process_cpu_seconds(pgid: int) -> dict[int, float]:
    """User + system CPU seconds of each process in the process group, by pid (``/proc/<pid>/stat``)."""
    seconds, tick = {}, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            seconds[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every process in the process group."""
    return sum(process_cpu_seconds(pgid).values())


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine (``/proc/stat``: user..steal, less idle and iowait)."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / os.sysconf("SC_CLK_TCK")


def start_server(
    model: Path, config: ServerConfig, log: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(TRIAGE_MODEL_PATH=str(model), TRIAGE_HOST="127.0.0.1", TRIAGE_PORT=str(port), PYTHONPATH=str(ROOT))
    env.update(TRIAGE_WORKERS_PER_DEVICE=str(config.workers), TRIAGE_MAX_BATCH_SIZE=str(config.batch))
    env.update(TRIAGE_BATCH_TIMEOUT=str(config.timeout), TRIAGE_ORT_THREADS=str(config.threads))
    if not config.handoff:
        env.update(TRIAGE_HANDOFF_DIR="")
    if not config.pipes:
        env.update(TRIAGE_PACKET_PIPES="false")
    env.update(extra_env or {})
    with log.open("wb") as out:
        proc = subprocess.Popen(SERVE, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"triage serve did not become healthy; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def route_request(data: bytes, index: int) -> bytes:
    """A complete ``POST /v1/route`` HTTP/1.1 request with one multipart ``file`` part."""
    boundary = f"bench{index:08d}"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p{index}.jpg"\r\n'
    body = (part + "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = f"POST /v1/route HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary={boundary}"
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One request on a keep-alive connection (the service's answers always carry a Content-Length)."""
    writer.write(request)
    await writer.drain()
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return int(lines[0].split()[1]), await reader.readexactly(int(headers["content-length"]))


@dataclass
class LoadResult:
    latencies: list[float]  # seconds: requests started after the warm-up and answered within the window
    errors: int  # non-200, no route in the answer, connection failures (warm-up included)
    server_cpu: float  # cores busy on average in the window: the server's processes, this load generator,
    client_cpu: float  # and everything else on the machine
    other_cpu: float


async def run_load(
    port: int,
    requests: list[bytes],
    c: int,
    args: argparse.Namespace,
    pgid: int,
    record: Callable[[float, float, str], None] | None = None,
) -> LoadResult:
    """``record(t0, t1, outcome)``, if given, sees every request: outcome "200", "HTTP <status>" or an exception."""
    warmup, seconds = args.warmup, args.seconds
    t_end = (t_warm := time.perf_counter() + warmup) + seconds
    result = LoadResult([], 0, 0.0, 0.0, 0.0)
    photos = itertools.cycle(requests)

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (t0 := time.perf_counter()) < t_end:
            try:
                status, body = await asyncio.wait_for(_exchange(reader, writer, next(photos)), 60)
                ok = status == 200 and b'"route"' in body
                outcome = "200" if ok else f"HTTP {status}" + (" without route" if status == 200 else "")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                ok, outcome = False, type(exc).__name__
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t1 = time.perf_counter()
            result.errors += not ok
            if record is not None:
                record(t0, t1, outcome)
            if ok and t0 >= t_warm and t1 <= t_end:
                result.latencies.append(t1 - t0)
        writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(c)]
    await asyncio.sleep(warmup)
    server0, client0, machine0 = group_cpu_seconds(pgid), time.process_time(), machine_cpu_seconds()
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    result.server_cpu = (group_cpu_seconds(pgid) - server0) / seconds
    result.client_cpu = (time.process_time() - client0) / seconds
    result.other_cpu = (machine_cpu_seconds() - machine0) / seconds - result.server_cpu - result.client_cpu
    await asyncio.gather(*tasks)
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def inprocess_table(model: Path, batches: list[int], totals: list[int]) -> InProcess:
    """Prints the in-process table; returns per size (best photos/s, p99 latency in seconds)."""
    engine = TriageEngine(model, device="cpu")
    engine.warm_up()
    print(f"model {model.name} ({engine.card['name']} {engine.card['version']}), {engine.info.provider}\n")
    print("In-process: 2 processes x 1 ONNX Runtime thread, photos/s by batch size; latency: 1 process, batch 1.\n")
    print("| photo | mean JPEG bytes | " + " | ".join(f"batch {b}" for b in batches) + " | p50 ms | p99 ms |")
    print("|---|---:|" + "---:|" * (len(batches) + 2))
    out = {}
    for name, total in zip(SIZES, totals, strict=True):
        rates = [inprocess_throughput(model, name, b, total) for b in batches]
        lat = inprocess_latency(engine, _PHOTOS[name], 100)
        out[name] = (max(rates), percentile(lat, 99))
        cells = " | ".join(f"**{r:.1f}**" if r == max(rates) else f"{r:.1f}" for r in rates)
        mean_bytes = statistics.mean(len(p) for p in _PHOTOS[name])
        print(f"| {name} | {mean_bytes:,.0f} | {cells} | {percentile(lat, 50) * 1e3:.1f} | {out[name][1] * 1e3:.1f} |")
    return out


def service_table(model: Path, config: ServerConfig, args: argparse.Namespace, inproc: InProcess) -> list[str]:
    """Serves with ``config``, prints its table; returns the summary cells (ratios, p99 at concurrency 1)."""
    proc, port = start_server(model, config, args.log)
    cells: dict[str, str] = {}
    try:
        idle0 = group_cpu_seconds(proc.pid)
        time.sleep(2.0)
        idle = (group_cpu_seconds(proc.pid) - idle0) / 2.0
        print(f"\n#### {config} (idle server CPU {idle:.2f} cores)\n")
        print(SERVICE_HEAD)
        for name, target in zip(SIZES, (0.9, 0.6), strict=True):
            requests = [route_request(p, i) for i, p in enumerate(_PHOTOS[name])]
            best = 0.0
            for c in args.concurrency:
                r = asyncio.run(run_load(port, requests, c, args, proc.pid))
                rate = len(r.latencies) / args.seconds
                best = max(best, rate)
                p50, p99 = percentile(r.latencies, 50) * 1e3, percentile(r.latencies, 99) * 1e3
                print(
                    f"| {name} | {c} | {rate:.1f} | {rate / inproc[name][0]:.2f} | {p50:.1f} | {p99:.1f} | {r.errors} "
                    f"| {r.server_cpu:.2f} | {r.client_cpu:.2f} | {r.other_cpu:.2f} |"
                )
                if c == 1:
                    cells[f"p99 {name}"] = f"{p99:.1f} ({'met' if p99 <= inproc[name][1] * 1e3 + 5 else 'missed'})"
            ratio = best / inproc[name][0]
            cells[f"ratio {name}"] = f"{ratio:.2f} ({'met' if ratio >= target else 'missed'})"
    finally:
        stop_server(proc)
    return [str(config), f"{idle:.2f}"] + [cells[f"ratio {n}"] for n in SIZES] + [cells[f"p99 {n}"] for n in SIZES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx")
    parser.add_argument("--config", action="append", type=ServerConfig.parse, help="server settings (repeatable)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="in-process batch sizes")
    parser.add_argument("--pool", type=int, nargs=2, default=[24, 96], help="distinct photos: phone, small")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each load level")
    parser.add_argument("--inproc-photos", type=int, nargs=2, default=[192, 768], help="photos per in-process run")
    parser.add_argument("--log", type=Path, default=Path("/tmp/service_load_serve.log"), help="the server's output")
    args = parser.parse_args()
    busy = machine_cpu_seconds()
    time.sleep(2.0)
    print(f"other processes before the run: {(machine_cpu_seconds() - busy) / 2:.2f} of {os.cpu_count()} cores busy")
    with mp.get_context("fork").Pool(2) as pool:
        for name, n in zip(SIZES, args.pool, strict=True):
            _PHOTOS[name] = pool.map(_render, [(i, SIZES[name]) for i in range(n)])
    inproc = inprocess_table(model := args.model.resolve(), args.batches, args.inproc_photos)
    rows = [service_table(model, config, args, inproc) for config in args.config or [ServerConfig()]]
    bounds = " and ".join(f"<= {inproc[n][1] * 1e3 + 5:.1f}" for n in SIZES)
    print(f"\nSummary: best photos/s / in-process limit (>= 0.9, >= 0.6); p99 ms at concurrency 1 ({bounds}).\n")
    print(
        "| config | idle CPU | 4032x3024 ratio | 640x480 ratio | 4032x3024 p99 c=1 | 640x480 p99 c=1 |\n|---|"
        + "---:|" * 5
    )
    print("\n".join("| " + " | ".join(row) + " |" for row in rows))


if __name__ == "__main__":
    main()
