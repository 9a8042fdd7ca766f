"""Latency of ``POST /v1/explain`` against ``POST /v1/route`` for the same photo (target: explain <= 3x route).

    .venv/bin/python bench/explain_latency.py [--n 40] [--model artifacts/triage.onnx] [--photo FILE]
    .venv/bin/python bench/explain_latency.py --url http://127.0.0.1:8000 [--api-key KEY]

Without ``--url`` the service runs in this process (LitServe's test harness, real inference workers, FastAPI's
TestClient, no sockets); with it, requests go over HTTP to a running ``triage serve``. Requests are sent one at a
time, after a few warm-up requests; prints the median and 90th percentile of each in milliseconds and the ratio
of the medians. The photo defaults to a generated 4:3 damaged-screen photo.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
Post = Callable[[str, bytes, dict[str, str]], int]
CASES = (
    ("route", "/v1/route", {}),
    ("explain (png, default: 4 channels)", "/v1/explain", {}),
    ("explain (png, 6 channels)", "/v1/explain", {"channels": "6"}),
    ("explain (png, 1 channel)", "/v1/explain", {"channels": "1"}),
    ("explain (json arrays)", "/v1/explain", {"maps": "array"}),
)


@contextlib.contextmanager
def in_process(model: Path) -> Iterator[Post]:
    from fastapi.testclient import TestClient
    from litserve.utils import wrap_litserve_start

    from service.metrics import use_metrics_dir
    from service.server import build_server, preflight
    from service.settings import Settings

    use_metrics_dir(Path(tempfile.mkdtemp(prefix="bench-metrics-")))
    settings = Settings(model_path=model, device="cpu", api_key=None)
    server = build_server(settings, *preflight(settings))
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.1)

        def post(path: str, data: bytes, params: dict[str, str]) -> int:
            return client.post(path, files={"file": ("photo.jpg", data)}, params=params).status_code

        yield post


@contextlib.contextmanager
def remote(url: str, api_key: str | None) -> Iterator[Post]:
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:

        def post(path: str, data: bytes, params: dict[str, str]) -> int:
            return client.post(path, files={"file": ("photo.jpg", data)}, params=params).status_code

        yield post


def measure(post: Post, path: str, data: bytes, params: dict[str, str], n: int, warm_up: int = 3) -> list[float]:
    """Milliseconds of ``n`` sequential requests (after ``warm_up`` unmeasured ones); raises on a non-200."""
    times = []
    for i in range(warm_up + n):
        t0 = time.perf_counter()
        status = post(path, data, params)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise SystemExit(f"{path} {params} answered {status}")
        if i >= warm_up:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="measured requests per case")
    parser.add_argument("--model", type=Path, default=Path("artifacts/triage.onnx"))
    parser.add_argument("--photo", type=Path, help="photo to send (default: a generated damaged-screen photo)")
    parser.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000 (default: in-process)")
    parser.add_argument("--api-key")
    args = parser.parse_args()
    if args.photo:
        data = args.photo.read_bytes()
    else:
        from model.synth import render_photo

        data = render_photo(7, "screen_damage", split="test", size=(640, 480)).encode()
    where = args.url or f"in-process, {args.model}"
    with remote(args.url, args.api_key) if args.url else in_process(args.model) as post:
        results = {name: measure(post, path, data, params, args.n) for name, path, params in CASES}
    route = statistics.median(results["route"])
    print(f"{where}; {len(data)} byte photo; {args.n} sequential requests per case\n")
    print("| request | median ms | p90 ms | median / route |")
    print("|---|---:|---:|---:|")
    for name, times in results.items():
        p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
        median = statistics.median(times)
        print(f"| {name} | {median:.1f} | {p90:.1f} | {median / route:.2f}x |")


if __name__ == "__main__":
    main()
