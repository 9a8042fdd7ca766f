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
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import standin_base  # a sibling script, not a package

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
SETTINGS_ENV = ROOT / "deploy" / "base" / "settings.env"
SAMPLES = ROOT / "samples"
MODEL_IN_IMAGE = "/app/artifacts/triage.onnx"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UID = 10001
HEALTH_WITHIN_S = 30.0
STOP_WITHIN_S = 10.0
REFUSE_WITHIN_S = 90.0
PROBABILITY_TOLERANCE = 1e-6


class SmokeFailure(RuntimeError):
    """A check of the image failed; the message says which and why."""


def podman(*args: str, timeout: float | None = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman; SmokeFailure with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SmokeFailure(f"podman {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def preflight() -> None:
    """Fail with the reason when podman cannot run containers here."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            raise SmokeFailure(f"{tool} is not installed (apt-get install podman runc netavark aardvark-dns iptables)")
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False)
    if info.returncode != 0:
        raise SmokeFailure(f"podman cannot run here: {info.stderr.strip()}")
    probe = podman("run", "--rm", standin_base.ensure(), "true", check=False)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Containers:
    """Starts containers with the restricted settings of deploy/ and removes every one of them on exit."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.names: list[str] = []
        self.api_key = secrets.token_urlsafe(24)

    def run(self, port: int, extra: Sequence[str] = ()) -> str:
        name = f"triage-smoke-{os.getpid()}-{len(self.names)}"
        self.names.append(name)
        podman(
            "run", "--detach", "--name", name,
            "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/run/triage-metrics",
            "--user", f"{UID}:{UID}", "--cap-drop=ALL", "--security-opt=no-new-privileges",
            "--publish", f"127.0.0.1:{port}:8000",
            "--env-file", str(SETTINGS_ENV),
            "--env", "PROMETHEUS_MULTIPROC_DIR=/run/triage-metrics",
            "--env", f"TRIAGE_API_KEY={self.api_key}",
            *extra, self.image,
        )  # fmt: skip
        return name

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)


def logs(name: str) -> str:
    proc = podman("logs", name, check=False)
    return proc.stdout + proc.stderr


def wait_healthy(base_url: str, name: str, within: float) -> float:
    """Seconds until /health answered 200; SmokeFailure if not within ``within`` s or the container stopped."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            raise SmokeFailure(f"the container is {state} before /health answered 200:\n{logs(name)[-3000:]}")
        time.sleep(0.25)
    raise SmokeFailure(f"/health did not answer 200 within {within:.0f} s:\n{logs(name)[-3000:]}")


def expected_routes(photos: Sequence[Path]) -> list[dict[str, Any]]:
    """``triage predict --json`` of this checkout on ``photos``: the answers the image must give."""
    triage = Path(sys.executable).with_name("triage")
    out = subprocess.run(
        [str(triage), "predict", "--json", *map(str, photos)], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def sample_photos(limit: int) -> list[Path]:
    return sorted(p for p in SAMPLES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})[:limit]


def check_routes(base_url: str, headers: dict[str, str]) -> str:
    photos = sample_photos(int(_settings().get("TRIAGE_MAX_IMAGES", "10")))
    if not photos:
        raise SmokeFailure(f"no sample photos under {SAMPLES}")
    expected = expected_routes(photos)
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    answer = httpx.post(f"{base_url}/v1/route", files=files, headers=headers, timeout=60)
    if answer.status_code != 200:
        raise SmokeFailure(f"/v1/route answered {answer.status_code}: {answer.text[:500]}")
    images = answer.json()["images"]
    if len(images) != len(expected):
        raise SmokeFailure(f"/v1/route routed {len(images)} photos of {len(expected)}")
    worst = 0.0
    for got, want in zip(images, expected, strict=True):
        if got["route"] != want["route"] or set(got["probabilities"]) != set(want["probabilities"]):
            raise SmokeFailure(f"{want['file']}: image says {got['route']} {got['probabilities']}, predict {want}")
        worst = max([worst, *(abs(got["probabilities"][k] - v) for k, v in want["probabilities"].items())])
    if worst > PROBABILITY_TOLERANCE:
        raise SmokeFailure(f"probabilities differ from triage predict by up to {worst:.3g}")
    routes = ", ".join(sorted({w["route"] for w in expected}))
    return f"{len(photos)} photos as triage predict routes them ({routes}; largest probability difference {worst:.1g})"


def check_model(base_url: str, headers: dict[str, str]) -> str:
    model = httpx.get(f"{base_url}/v1/model", headers=headers, timeout=10).json()
    if model.get("provider") != "CPUExecutionProvider":
        raise SmokeFailure(f"/v1/model names provider {model.get('provider')!r}")
    metrics = httpx.get(f"{base_url}/metrics", timeout=10)
    if metrics.status_code != 200 or 'provider="CPUExecutionProvider"' not in metrics.text:
        raise SmokeFailure(f"/metrics answered {metrics.status_code} without the triage_model provider series")
    return f"/v1/model and /metrics name {model['provider']} ({model.get('name')} {model.get('version')})"


PROCESS_IDS = (
    "import glob\n"
    "for status in glob.glob('/proc/[0-9]*/status'):\n"
    "    fields = dict(line.split(':', 1) for line in open(status).read().splitlines() if ':' in line)\n"
    "    print(fields['Name'].strip(), fields['Uid'].split()[0], fields['Uid'].split()[1], fields['CapEff'].strip(),"
    " fields['NoNewPrivs'].strip())\n"
)


def check_restricted(name: str) -> str:
    rows = [line.split() for line in podman("exec", name, "python", "-c", PROCESS_IDS).stdout.splitlines()]
    bad = [r for r in rows if r[1:] != [str(UID), str(UID), "0000000000000000", "1"]]
    if not rows or bad:
        raise SmokeFailure(f"processes not running as uid {UID} without capabilities: {bad or 'none found'}")
    write = podman("exec", name, "touch", "/app/written", check=False)
    if write.returncode == 0:
        raise SmokeFailure("the root file system is writable")
    return f"{len(rows)} processes as uid {UID}, no capabilities, no-new-privileges; root file system read-only"


def check_healthcheck(name: str) -> str:
    configured = podman("inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout.strip()
    if "/health" not in configured:
        raise SmokeFailure(f"the image has no HEALTHCHECK on /health: {configured}")
    run = podman("healthcheck", "run", name, check=False)
    if run.returncode != 0:
        raise SmokeFailure(f"podman healthcheck run: {run.returncode} {run.stdout.strip()} {run.stderr.strip()}")
    return "podman healthcheck run: healthy"


def check_stop(name: str) -> str:
    started = time.monotonic()
    stop = podman("stop", "--time", str(int(STOP_WITHIN_S)), name, check=False, timeout=STOP_WITHIN_S + 20)
    took = time.monotonic() - started
    status = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    text = logs(name)
    if stop.returncode != 0 or status != "0" or took > STOP_WITHIN_S:
        raise SmokeFailure(f"podman stop: rc {stop.returncode}, exit status {status}, {took:.1f} s:\n{text[-2000:]}")
    if "finishing requests in flight" not in text or "HTTP servers drained" not in text:
        raise SmokeFailure(f"no drain message in the logs:\n{text[-2000:]}")
    return f"stopped with status 0 in {took:.1f} s, drained"


def check_tampered_model(containers: Containers, scratch: Path) -> str:
    tampered = scratch / "triage.onnx"
    data = bytearray((ROOT / "artifacts" / "triage.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    tampered.chmod(0o644)
    port = free_port()
    name = containers.run(port, ["--volume", f"{tampered}:{MODEL_IN_IMAGE}:ro"])
    waited = podman("wait", name, check=False, timeout=REFUSE_WITHIN_S)
    status = waited.stdout.strip()
    text = logs(name)
    if status in ("", "0") or "refusing to serve" not in text:
        raise SmokeFailure(f"a tampered model did not stop the service (exit status {status!r}):\n{text[-2000:]}")
    return f"exit status {status}, 'refusing to serve' in the log"


def _settings() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in SETTINGS_ENV.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


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
    started = time.monotonic()
    try:
        preflight()
        image = args.image
        if image is None:
            base = args.base or standin_base.ensure()
            image = args.tag or f"localhost/ticket-photo-triage:smoke-{args.target}"
            took = build(args.target, base, image)
            print(f"ok  build: --target {args.target} on {base} in {took:.0f} s", flush=True)
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
