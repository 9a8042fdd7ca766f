"""Build the CPU image with podman and check that it serves, as deployed: read-only root, non-root, no capabilities.

    .venv/bin/python deploy/container_smoke.py               # build the stand-in base (once), the image, check it
    .venv/bin/python deploy/container_smoke.py --image NAME  # check an image built already

No registry is needed: the Python base is made locally (deploy/standin_base.py) unless ``--base`` names one. The
image then runs with the restricted settings of deploy/ (uid 10001, ``--cap-drop=ALL``, no-new-privileges,
``--read-only`` with ``/tmp`` and the metrics directory on tmpfs, deploy/base/settings.env) and a published port, and
must: answer /health 200 within 30 s; route the sample photos exactly as ``triage predict`` does from this checkout;
name its execution provider in /v1/model and /metrics; run every process as uid 10001; pass its own HEALTHCHECK; stop
on ``podman stop`` with status 0 within 10 s, saying it drained; and refuse to start on a tampered model. Every
container it starts is removed whatever happens. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Sibling scripts, not a package.
import standin_base
from container_checks import (
    check_healthcheck,
    check_model,
    check_restricted,
    check_routes,
    check_stop,
    check_tampered_model,
    wait_healthy,
)
from podman_container import CONTAINERS_CONF, ROOT, Containers, SmokeFailure, free_port, podman

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HEALTH_WITHIN_S = 30.0


def check_podman() -> None:
    """Fail with the reason when podman is missing or cannot work here."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            raise SmokeFailure(f"{tool} is not installed (apt-get install podman runc netavark aardvark-dns iptables)")
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        raise SmokeFailure(f"podman cannot run here: {info.stderr.strip()}")


def check_can_start(image: str) -> None:
    """Fail with the reason when podman cannot start a container of ``image`` (runtime, limits, network)."""
    probe = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "true", image, check=False)
    if probe.returncode != 0:
        raise SmokeFailure(f"podman cannot start a container here: {probe.stderr.strip()}")


def build(target: str, base: str, tag: str) -> float:
    """``podman build --target`` on the checkout; the seconds it took. For ``gpu``, ``base`` stands in for the CUDA
    image too: that builds every step of the GPU target (its Python from the base's package archive, the lock, the
    checks, the trim) without CUDA, and the image serves on the CPU provider."""
    args = ["build", "--format", "docker", "--target", target, "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag]
    if target == "gpu":
        args += ["--build-arg", f"CUDA_IMAGE={base}"]
    if CA_BUNDLE.is_file():
        # The build's TLS goes through this host's egress, whose CA only the host's bundle trusts: lend it to the
        # RUN steps read-only (it is not copied into the image).
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    previous = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    started = time.monotonic()
    proc = subprocess.run(["podman", *args, str(ROOT)], text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise SmokeFailure(f"podman build --target {target} exited {proc.returncode}")
    took = time.monotonic() - started
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip():
        # The image this tag named before is replaced: drop it (the layers the new one shares stay), so that
        # repeated runs on a changing checkout do not pile up images.
        podman("rmi", previous, check=False)
    return took


def smoke(image: str) -> list[str]:
    """Every check on ``image``; the lines to report. SmokeFailure on the first that fails."""
    report = []

    def step(title: str, check: Callable[[], str]) -> None:
        report.append(f"ok  {title}: {check()}")
        print(report[-1], flush=True)

    with Containers(image) as containers, tempfile.TemporaryDirectory(prefix="triage-smoke-") as scratch:
        os.chmod(scratch, 0o755)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        headers = {"X-API-Key": containers.api_key}
        started = time.monotonic()
        name = containers.run(port)
        step("health", lambda: f"/health 200 {wait_healthy(base_url, name, HEALTH_WITHIN_S):.1f} s after start")
        print(f"    (run + health: {time.monotonic() - started:.1f} s)", flush=True)
        step("route", lambda: check_routes(base_url, headers))
        step("model", lambda: check_model(base_url, headers))
        step("restricted", lambda: check_restricted(name))
        step("healthcheck", lambda: check_healthcheck(name))
        step("stop", lambda: check_stop(name))
        step("tampered model", lambda: check_tampered_model(containers, Path(scratch)))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="check this image instead of building one")
    parser.add_argument("--base", help="Python base image to build on (default: the local stand-in)")
    parser.add_argument("--target", choices=("cpu", "gpu"), default="cpu", help="gpu: built on the stand-in, no CUDA")
    parser.add_argument("--tag", help="name of the built image (default: localhost/ticket-photo-triage:smoke-TARGET)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    # A CI time-out's SIGTERM unwinds like an error, so the containers started so far are still removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        check_podman()
        image = args.image
        if image is None:
            base = args.base or standin_base.ensure()
            check_can_start(base)
            image = args.tag or f"localhost/ticket-photo-triage:smoke-{args.target}"
            took = build(args.target, base, image)
            print(f"ok  build: --target {args.target} on {base} in {took:.0f} s", flush=True)
        else:
            check_can_start(image)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
        print(f"ok  size: {image} is {size / 1e6:.0f} MB", flush=True)
        smoke(image)
    except (SmokeFailure, subprocess.SubprocessError, httpx.HTTPError, OSError) as exc:
        print(f"FAILED container smoke test: {exc}", file=sys.stderr)
        return 1
    print(f"container smoke test passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
