"""The checks of deploy/container_smoke.py on a running container, each returning what it found or raising
SmokeFailure with the reason."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from podman_container import ROOT, SETTINGS_ENV, UID, Containers, SmokeFailure, free_port, logs, podman

SAMPLES = ROOT / "samples"
MODEL_IN_IMAGE = "/app/artifacts/triage.onnx"
STOP_WITHIN_S = 10.0
REFUSE_WITHIN_S = 90.0
PROBABILITY_TOLERANCE = 1e-6


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
    files = [("file", (p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "image/jpeg")) for p in photos]
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
    report = httpx.get(f"{base_url}/v1/model/report", headers=headers, timeout=10)
    if report.status_code != 200 or hashlib.sha256(report.content).hexdigest() != model["report"]["sha256"]:
        raise SmokeFailure(f"/v1/model/report answered {report.status_code}, not the report the card records")
    return (
        f"/v1/model and /metrics name {model['provider']} ({model.get('name')} {model.get('version')}); "
        "/v1/model/report serves the card's report"
    )


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
