"""Where a served photo's CPU goes: CPU time per photo of each kind of ``triage serve`` process under load.

    .venv/bin/python bench/cpu_by_process.py [--concurrency 16] [--seconds 10] [--config workers=2,...]

Starts ``triage serve`` (the service's defaults unless ``--config``), loads ``POST /v1/route`` with
``bench.service_load``'s client for each photo size, and reads every process's user + system CPU time
(``bench.service_load.process_cpu_seconds``) at the start and end of the measured window. Processes are named as
``bench/soak.py`` names them (HTTP worker, inference worker, queue manager, main, resource tracker). The inference
workers' share is what the in-process path costs (decode, preprocess, ONNX Runtime); the rest is the cost of
serving over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service_load import (  # noqa: E402
    SIZES,
    ServerConfig,
    _render,
    process_cpu_seconds,
    route_request,
    run_load,
    start_server,
    stop_server,
)
from bench.soak import process_roles  # noqa: E402


async def measure(port: int, pgid: int, requests: list[bytes], args: argparse.Namespace) -> tuple[int, dict, dict]:
    """Photos answered in the window, and CPU snapshots at its start and end."""
    marks: dict[str, dict[int, float]] = {}

    async def mark() -> None:
        await asyncio.sleep(args.warmup)
        marks["start"] = process_cpu_seconds(pgid)
        await asyncio.sleep(args.seconds)
        marks["end"] = process_cpu_seconds(pgid)

    marker = asyncio.create_task(mark())
    result = await run_load(port, requests, args.concurrency, args, pgid)
    await marker
    return len(result.latencies), marks["start"], marks["end"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "triage.onnx")
    parser.add_argument("--config", type=ServerConfig.parse, default=ServerConfig(), help="server settings")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per photo size")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pool", type=int, default=16, help="distinct photos per size")
    parser.add_argument("--log", type=Path, default=Path("/tmp/cpu_by_process_serve.log"))
    args = parser.parse_args()
    proc, port = start_server(args.model, args.config, args.log)
    try:
        pgid = os.getpgid(proc.pid)
        roles = process_roles(pgid, port)
        print(f"{args.model.name}, {args.config}, concurrency {args.concurrency}, {args.seconds:g} s per size\n")
        print("| photo | photos/s | process | processes | cores busy | ms of CPU per photo |")
        print("|---|---:|---|---:|---:|---:|")
        for name, size in SIZES.items():
            requests = [route_request(_render((i, size)), i) for i in range(args.pool)]
            answered, start, end = asyncio.run(measure(port, pgid, requests, args))
            by_role: dict[str, list[float]] = defaultdict(list)
            for pid, cpu in end.items():
                by_role[roles.get(pid, "other")].append(cpu - start.get(pid, cpu))
            total = sum(sum(v) for v in by_role.values())
            rate = answered / args.seconds
            for role, spent in sorted(by_role.items(), key=lambda kv: -sum(kv[1])):
                cores = sum(spent) / args.seconds
                per_photo = 1000 * sum(spent) / max(answered, 1)
                print(f"| {name} | {rate:.1f} | {role} | {len(spent)} | {cores:.2f} | {per_photo:.2f} |")
            print(
                f"| {name} | {rate:.1f} | **all** | {len(end)} | {total / args.seconds:.2f} | "
                f"{1000 * total / max(answered, 1):.2f} |"
            )
            time.sleep(1)
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
