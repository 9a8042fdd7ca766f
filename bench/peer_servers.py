"""Peer servers: ``triage serve`` vs TorchServe (stock, tuned) vs FastAPI + PyTorch eager, same weights and load.

    .venv/bin/python bench/peer_servers.py [--seconds 8] [--warmup 2] [--concurrency 1 4 16 64] [--servers ...]

Needs the ``bench`` extra (``pip install -c requirements/serving.lock -e ".[train,dev,deploy,bench]"``) and a
Java 17 runtime. Every server gets the weights of ``artifacts/triage_checkpoint.npz`` (read with
``model.checkpoint`` into ``model.network``): ``triage serve`` runs its ONNX export (``artifacts/triage.onnx``,
checked against the checkpoint at start), TorchServe a TorchScript trace packed by torch-model-archiver, FastAPI
the eager network (bench/peers/fastapi_app.py). The photos (generated 4032x3024 and 640x480 JPEGs) and the load
generator (bench/service_load.py's asyncio keep-alive client, requests built in advance) are the same for all;
each server runs alone in its own process group (CPU accounted per group) and is stopped before the next starts.

* triage: ``triage serve`` with its defaults (2 single-threaded route workers, batches of what is queued, up to
  8), multipart upload.
* ts-stock: TorchServe defaults (workers = cores, batch 1, PyTorch's own thread count) and the stock
  ``image_classifier`` handler with ``topk = 2`` (bench/peers/ts_stock_handler.py).
* ts-tuned: ``OMP_NUM_THREADS=1``, 2 workers (one per core), batches of up to 4 with a 5 ms delay, asynchronous
  WARN logging (access log kept), no system metrics, and a handler decoding JPEGs with ``Image.draft``
  (bench/peers/ts_tuned_handler.py, set up in bench/peers/torchserve_setup.py).
* fastapi: uvicorn, one process, a sync endpoint on FastAPI's thread pool, 1 PyTorch thread, batch 1, the
  project's own preprocessing (bench/peers/fastapi_app.py); uvicorn's access log kept, as triage keeps one.

TorchServe's preprocessing is the stock one (resize 256, centre crop 224, ImageNet normalisation), not our
letterbox to 256: a slightly smaller network input, and a crop the service would not make.

Per server also: the time from launching its process to the first good answer to a real 640x480 photo request
(polled every 50 ms), and the peak RSS summed over all processes of its session (TorchServe's launcher, Java
frontend and Python workers; every ``triage serve`` process), sampled every 0.5 s from launch to exit, load
included. A server that cannot be started is reported with the reason, and the run goes on without it. The last
table checks the targets against TorchServe (stock and tuned).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.peers import torchserve_setup as ts  # noqa: E402
from bench.peers.targets import MIB, PEERS, Figures, p99_ms, targets  # noqa: E402
from bench.process_stats import RssSampler, free_port, launch, poll_until, session_members, stop_session  # noqa: E402
from bench.service_load import (  # noqa: E402
    SERVE,
    SIZES,
    LoadResult,
    ServerConfig,
    _exchange,
    _render,
    group_cpu_seconds,
    machine_cpu_seconds,
    percentile,
    route_request,
)
from model.checkpoint import load_checkpoint  # noqa: E402
from model.network import TriageNet, build_network, load_numpy_state  # noqa: E402
from model.preprocess import prepare  # noqa: E402
from service.inference.engine import TriageEngine  # noqa: E402

SERVERS = ("triage", "ts-stock", "ts-tuned", "fastapi")
PROBS = b'"screen_damage"'  # a class name: the peers answer class probabilities
HEAD = (
    "| server | concurrency | photos/s | p50 ms | p99 ms | errors | CPU server | client | other |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]  # leads its own session and process group
    port: int
    request: Callable[[bytes, int], bytes]  # (photo, index) -> a complete HTTP request
    expect: bytes  # found in every good answer
    sampler: RssSampler  # summed RSS of the session, from launch to exit
    stop_pid: int = 0  # the process to send SIGTERM to (default: proc)
    start_s: float = math.nan  # launch to the first good answer to a real photo request
    results: dict[tuple[str, int], LoadResult] = field(default_factory=dict)


def octet_request(path: str, data: bytes) -> bytes:
    """A complete HTTP/1.1 ``POST path`` request with ``data`` as an ``application/octet-stream`` body."""
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream"
    return f"{head}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data


def stop(server: Server, grace: float = 30.0) -> list[tuple[int, str]]:
    """SIGTERM the server's main process, wait for its whole session to exit; SIGKILL and return what was left."""
    return stop_session(server.proc, server.stop_pid or server.proc.pid, grace)


def probe(port: int, request: bytes) -> tuple[int, bytes]:
    async def once() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(_exchange(reader, writer, request), 60)
        finally:
            writer.close()

    return asyncio.run(once())


def wait_ready(server: Server, photo: bytes, log: Path, t0: float, timeout: float = 180.0) -> float:
    """Seconds from ``t0`` (the launch) until a real request is answered well, polled every 50 ms (TorchServe
    answers 503 while its workers load)."""
    answer, request = (0, b""), server.request(photo, 0)

    def attempt() -> bool:
        nonlocal answer
        try:
            answer = probe(server.port, request)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, KeyError):
            return False
        return answer[0] == 200 and server.expect in answer[1]

    if (elapsed := poll_until(attempt, lambda: server.proc.poll() is None, t0, timeout)) is not None:
        return elapsed
    why = (
        f"exited with status {server.proc.poll()}" if server.proc.poll() is not None else f"no answer in {timeout:g} s"
    )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    stop(server)
    server.sampler.stop()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{server.name} {why} (last answer {answer[0]} {answer[1][:200]!r}); log {log}:\n{tail}")


def start(name: str, args: argparse.Namespace, tmp: Path, photo: bytes) -> Server:
    log, port = tmp / f"{name}.log", free_port()
    if name == "triage":  # as service_load.start_server, with ServerConfig()'s defaults
        config, env = ServerConfig(), {"PYTHONPATH": str(ROOT), "TRIAGE_MODEL_PATH": str(args.model)}
        env |= {"TRIAGE_HOST": "127.0.0.1", "TRIAGE_PORT": str(port), "TRIAGE_WORKERS_PER_DEVICE": str(config.workers)}
        env |= {"TRIAGE_MAX_BATCH_SIZE": str(config.batch), "TRIAGE_BATCH_TIMEOUT": str(config.timeout)}
        cmd, cwd, env = SERVE, ROOT, env | {"TRIAGE_ORT_THREADS": str(config.threads)}
        request, expect = route_request, b'"route"'
    elif name == "fastapi":
        cmd = [sys.executable, "-m", "uvicorn", "bench.peers.fastapi_app:app", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1"]  # and its access log, as triage has one
        env = {"PYTHONPATH": str(ROOT), "PEER_CHECKPOINT": str(args.checkpoint), "PEER_TORCH_THREADS": "1"}
        cwd, request, expect = ROOT, (lambda data, _: octet_request("/predict", data)), PROBS
    else:  # TorchServe writes logs/ under its working directory, its pid file and extracted models to TMPDIR
        cwd, flavor = tmp / name, name.removeprefix("ts-")
        (cwd / "config.properties").write_text(ts.properties((port, free_port(), free_port()), cwd / "store", flavor))
        env = {"TEMP": str(cwd), "TMPDIR": str(cwd)} | ({"OMP_NUM_THREADS": "1"} if flavor == "tuned" else {})
        cmd, request, expect = ts.command(cwd, flavor), (lambda d, _: octet_request("/predictions/triage", d)), PROBS
    proc, t0 = launch(cmd, env, cwd, log)
    (sampler := RssSampler(proc.pid, 0.5)).start()
    server = Server(name, proc, port, request, expect, sampler)
    server.start_s = wait_ready(server, photo, log, t0)
    if name.startswith("ts-"):
        server.stop_pid = int((tmp / name / ".model_server.pid").read_text())  # the Java frontend
    return server


async def drive(server: Server, requests: list[bytes], c: int, args: argparse.Namespace) -> LoadResult:
    """``c`` keep-alive clients for warm-up + measured seconds (bench/service_load.py's run_load, any answer)."""
    t_end = (t_warm := time.perf_counter() + args.warmup) + args.seconds
    result, photos, port = LoadResult([], 0, 0.0, 0.0, 0.0), itertools.cycle(requests), server.port

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (t0 := time.perf_counter()) < t_end:
            try:
                status, body = await asyncio.wait_for(_exchange(reader, writer, next(photos)), 60)
                ok = status == 200 and server.expect in body
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t1 = time.perf_counter()
            result.errors += not ok
            if ok and t0 >= t_warm and t1 <= t_end:
                result.latencies.append(t1 - t0)
        writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(c)]
    await asyncio.sleep(args.warmup)
    server0, client0, machine0 = group_cpu_seconds(server.proc.pid), time.process_time(), machine_cpu_seconds()
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    result.server_cpu = (group_cpu_seconds(server.proc.pid) - server0) / args.seconds
    result.client_cpu = (time.process_time() - client0) / args.seconds
    result.other_cpu = (machine_cpu_seconds() - machine0) / args.seconds - result.server_cpu - result.client_cpu
    await asyncio.gather(*tasks)
    return result


def parity(net: TriageNet, traced: Path, args: argparse.Namespace, photo: bytes) -> str:
    """Largest logit difference of the ONNX export and the TorchScript trace from the eager checkpoint network."""
    tensor = prepare(photo, load_checkpoint(args.checkpoint).config.preprocessing).tensor[None]
    with torch.inference_mode():
        eager = net(torch.from_numpy(tensor)).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            script = torch.jit.load(str(traced))(torch.from_numpy(tensor)).numpy()
    onnx = TriageEngine(args.model, device="cpu").infer(tensor)["logits"]
    return f"max |logit - eager|: ONNX {np.abs(onnx - eager).max():.2e}, TorchScript {np.abs(script - eager).max():.2e}"


def measure(name: str, args: argparse.Namespace, tmp: Path, photos: dict[str, list[bytes]]) -> Server:
    server = start(name, args, tmp, photos["640x480"][0])
    try:
        idle0 = group_cpu_seconds(server.proc.pid)
        time.sleep(2.0)
        print(f"{name}: first good answer {server.start_s:.2f} s after launch, ", end="")
        print(f"{len(session_members(server.proc.pid))} processes, ", end="")
        print(f"idle CPU {(group_cpu_seconds(server.proc.pid) - idle0) / 2:.2f} cores", flush=True)
        for size, pool in photos.items():
            requests = [server.request(p, i) for i, p in enumerate(pool)]
            for c in args.concurrency:
                server.results[size, c] = asyncio.run(drive(server, requests, c, args))
    finally:
        if left := stop(server):
            print(f"{name}: killed after the grace period: {left}")
        server.sampler.stop()
    return server


def figures(server: Server, args: argparse.Namespace) -> Figures:
    rate = {k: len(r.latencies) / args.seconds for k, r in server.results.items()}
    p99 = {k: p99_ms(r.latencies) for k, r in server.results.items()}
    return Figures(rate, p99, server.sampler.peak_rss, server.start_s, server.sampler.peak_pss)


def report(servers: list[Server], failed: dict[str, str], args: argparse.Namespace) -> None:
    print("\n#### Start and memory, summed over each server's processes (RSS counts a shared page once per process,")
    print("PSS splits it between its sharers)\n")
    print("| server | time to first answer s | peak RSS MiB, summed | peak PSS MiB, summed | processes | samples |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in servers:
        rss, pss, n = s.sampler.peak_rss / MIB, s.sampler.peak_pss / MIB, s.sampler.peak_processes
        print(f"| {s.name} | {s.start_s:.2f} | {rss:.0f} | {pss:.0f} | {n} | {s.sampler.samples} |")
    for name, why in failed.items():
        print(f"| {name} | could not be run: {why.splitlines()[0]} | - | - | - | - |")
    for size in SIZES:
        print(f"\n#### {size} JPEGs, {args.seconds:g} s per level after {args.warmup:g} s warm-up\n\n{HEAD}")
        for server, c in itertools.product(servers, args.concurrency):
            r = server.results[size, c]
            p50, p99 = percentile(r.latencies, 50) * 1e3, percentile(r.latencies, 99) * 1e3
            print(
                f"| {server.name} | {c} | {len(r.latencies) / args.seconds:.1f} | {p50:.1f} | {p99:.1f} | {r.errors} "
                f"| {r.server_cpu:.2f} | {r.client_cpu:.2f} | {r.other_cpu:.2f} |"
            )
    ours, peers = (servers[0], servers[1:]) if servers else (None, [])
    if ours is None or ours.name != "triage":
        return
    print(f"\n#### Targets ({args.seconds:g} s per level): photos/s best over concurrency {args.concurrency}; ", end="")
    print("p99 at each level; RSS as above; start: launch to the first good answer to a 640x480 photo\n")
    print("| target | triage | ts-stock | ts-tuned | result |\n|---|---:|---:|---:|---|")
    others = {s.name: figures(s, args) for s in peers} | {
        k: f"could not be run: {v.splitlines()[0]}" for k, v in failed.items()
    }
    others |= {p: "not in --servers" for p in PEERS if p not in others and p not in args.servers}
    for row in targets(figures(ours, args), others, args.concurrency):
        print("| " + " | ".join(row) + " |")
    if not peers:
        return
    print("\n#### triage photos/s relative to each peer (> 1: triage serves more)\n")
    print("| photo | concurrency | triage photos/s | " + " | ".join(f"x {p.name}" for p in peers) + " |")
    print("|---|---:|---:|" + "---:|" * len(peers))
    for size in SIZES:
        rates = {s.name: [len(s.results[size, c].latencies) / args.seconds for c in args.concurrency] for s in servers}
        levels = [(str(c), {k: v[i] for k, v in rates.items()}) for i, c in enumerate(args.concurrency)]
        for label, rate in [*levels, ("best", {k: max(v) for k, v in rates.items()})]:
            cells = [f"{rate['triage'] / rate[p.name]:.2f}" if rate[p.name] else "-" for p in peers]
            print(f"| {size} | {label} | {rate['triage']:.1f} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx", help="triage serve's model")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "artifacts" / "triage_checkpoint.npz")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--pool", type=int, nargs=2, default=[24, 96], help="distinct photos: phone, small")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each load level")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (archives, server logs)")
    args = parser.parse_args()
    args.model, args.checkpoint = args.model.resolve(), args.checkpoint.resolve()
    busy = machine_cpu_seconds()
    time.sleep(2.0)
    print(f"other processes before the run: {(machine_cpu_seconds() - busy) / 2:.2f} of {os.cpu_count()} cores busy")
    with mp.get_context("fork").Pool(2) as pool:
        photos = {
            name: pool.map(_render, [(i, SIZES[name]) for i in range(n)])
            for name, n in zip(SIZES, args.pool, strict=True)
        }
    checkpoint = load_checkpoint(args.checkpoint)
    net = load_numpy_state(build_network(checkpoint.config), checkpoint.weights).eval()
    tmp = Path(tempfile.mkdtemp(prefix="peer_servers_"))
    servers: list[Server] = []
    failed: dict[str, str] = {}
    try:
        try:
            traced = ts.package(net, checkpoint.config.preprocessing.classes, tmp)
            print(parity(net, traced, args, photos["640x480"][0]))
        except (OSError, subprocess.CalledProcessError) as exc:  # torch-model-archiver missing or failing
            failed |= {p: f"no model archive: {type(exc).__name__}: {exc}" for p in PEERS if p in args.servers}
        for name in sorted(set(args.servers) - set(failed), key=SERVERS.index):
            try:
                servers.append(measure(name, args, tmp, photos))
            except Exception as exc:  # reported with its reason; the others still run
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name}: could not be run: {failed[name]}", flush=True)
    finally:
        left = [m for s in servers for m in session_members(s.proc.pid)]
        print(f"leftover server processes: {left or 'none'}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(servers, failed, args)


if __name__ == "__main__":
    main()
