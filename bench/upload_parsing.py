"""What reading a photo upload costs the HTTP process: Starlette's form parser then a copy to ``/dev/shm``, against
streaming each part into its ``/dev/shm`` file as it arrives (``service.http.form_stream``, what ``triage serve`` does).

    .venv/bin/python bench/upload_parsing.py [--requests 40]

Serves one uvicorn process (uvloop, httptools: the service's HTTP stack) with three endpoints and sends each
generated photo to each from a keep-alive loopback client, one request at a time: ``raw`` only reads the body;
``starlette`` parses it with Starlette's ``MultiPartParser`` held in memory (as the service did before), reads the
part and writes it to a hand-off file; ``streamed`` is ``service.http.uploads.receive_upload`` with the hand-off's
writers. Reports the median round trip and the median time inside the handler, per photo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from starlette.formparsers import MultiPartParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service_load import _exchange, _render, route_request  # noqa: E402
from service.http.uploads import TicketUpload, UploadedPhoto, receive_upload  # noqa: E402
from service.runtime.photo_handoff import PhotoHandoff  # noqa: E402

MAX_BYTES = 20 * 1024 * 1024


def app() -> FastAPI:
    """The server: built by uvicorn (``--factory``) in its own process."""
    handoff = PhotoHandoff(Path("/dev/shm"))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        handoff.close()

    api = FastAPI(lifespan=lifespan)

    def timed(seconds: float, upload: TicketUpload) -> dict[str, float]:
        size = sum(len(p.read()) for p in upload.photos)
        handoff.release(upload)
        return {"ms": seconds * 1e3, "bytes": float(size)}

    @api.post("/raw")
    async def raw(request: Request) -> dict[str, float]:
        t0 = time.perf_counter()
        size = sum([len(chunk) async for chunk in request.stream()])
        return {"ms": (time.perf_counter() - t0) * 1e3, "bytes": float(size)}

    @api.post("/starlette")
    async def starlette(request: Request) -> dict[str, float]:
        t0 = time.perf_counter()
        parser = MultiPartParser(request.headers, request.stream(), max_part_size=MAX_BYTES)
        parser.spool_max_size = MAX_BYTES + 1
        form = await parser.parse()
        photos = [UploadedPhoto(part.filename, await part.read()) for part in form.getlist("file")]
        await form.close()
        upload = handoff.share(TicketUpload("", 0.0, tuple(photos)))
        return timed(time.perf_counter() - t0, upload)

    @api.post("/streamed")
    async def streamed(request: Request) -> dict[str, float]:
        t0 = time.perf_counter()
        upload = await receive_upload(request, handoff.new_writer)
        return timed(time.perf_counter() - t0, upload)

    return api


async def measure(port: int, photos: list[bytes], paths: list[str], n: int) -> dict[tuple[str, int], tuple]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = {}
    for i, photo in enumerate(photos):
        for path in paths:
            request = route_request(photo, i).replace(b"/v1/route", path.encode(), 1)
            trips, inside = [], []
            for k in range(n + 5):
                t0 = time.perf_counter()
                status, body = await _exchange(reader, writer, request)
                answer = json.loads(body)
                if status != 200 or answer["bytes"] < len(photo):
                    raise RuntimeError(f"{path}: HTTP {status} {body[:200]!r}")
                if k >= 5:
                    trips.append(time.perf_counter() - t0)
                    inside.append(answer["ms"])
            out[path, i] = (np.median(trips) * 1e3, np.median(inside))
    writer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="measured requests per photo and endpoint")
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    seeds = (5, 9, 14)  # 0.3, 1.1 and 3.6 MB 4032x3024 JPEGs
    photos = [_render((s, (4032, 3024))) for s in seeds] + [_render((0, (640, 480)))]
    cmd = [sys.executable, "-m", "uvicorn", "bench.upload_parsing:app", "--factory", "--port", str(args.port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        time.sleep(3.0)
        paths = ["/raw", "/starlette", "/streamed"]
        results = asyncio.run(measure(args.port, photos, paths, args.requests))
    finally:
        server.terminate()
        server.wait()
    print(f"\nmedian of {args.requests} requests each, one at a time; ms: round trip / inside the handler\n")
    print("| photo | JPEG bytes | raw body | Starlette form + copy to /dev/shm | streamed into /dev/shm |")
    print("|---|---:|---:|---:|---:|")
    for i, photo in enumerate(photos):
        size = "640x480" if i == len(photos) - 1 else "4032x3024"
        cells = [f"{results[p, i][0]:.2f} / {results[p, i][1]:.2f}" for p in paths]
        print(f"| {size} | {len(photo):,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
