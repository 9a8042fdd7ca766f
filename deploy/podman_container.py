"""Running the service's image with podman as deploy/ runs the pod: uid 10001, no capabilities, no-new-privileges,
a read-only root with ``/tmp`` and the metrics directory on tmpfs, the settings of deploy/base/settings.env, an API
key, and the port published on 127.0.0.1. Every container started is removed on exit, whatever happened."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
SETTINGS_ENV = ROOT / "deploy" / "base" / "settings.env"
UID = 10001


class SmokeFailure(RuntimeError):
    """A check of the image failed; the message says which and why."""


def podman(*args: str, timeout: float | None = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run podman; SmokeFailure with its stderr when ``check`` and it fails."""
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SmokeFailure(f"podman {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


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
