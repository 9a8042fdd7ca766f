"""Real ``triage serve`` processes on loopback for the end-to-end tests, each the leader of its own process group.

``serving`` starts one and stops its whole group whatever happens (``tests.started_processes.stop_group``); tests
take it through the ``serve`` fixture (``tests/service/conftest.py``) or a module fixture built on ``serving``. No
step assumes the machine is quiet: start-up gets minutes, and the log is searched whole.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.started_processes import REGISTRY, spawn_group, stop_group

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-m", "triage_cli", "serve"]
START_S = 180.0  # start-up on a quiet machine takes 2-5 s; on a loaded one much longer
HTTP_TIMEOUT = 60.0  # for any one request of a test that is not about timing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(model: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        TRIAGE_MODEL_PATH=str(model),
        TRIAGE_HOST="127.0.0.1",
        TRIAGE_PORT=str(port),
        TRIAGE_ORT_THREADS="1",
        TRIAGE_WORKERS_PER_DEVICE="1",  # one route worker: fewer processes on a small test machine
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def log_has(text: str, wanted: str) -> bool:
    """Whether ``wanted`` is anywhere in the log ``text`` (not only in its tail: on a slow start-up the lines of
    the health checks pile up after the start-up lines)."""
    return wanted in text


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pgid(self) -> int:
        return self.proc.pid  # the leader of its own process group

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def output(self) -> str:
        """The whole log so far."""
        return self.log.read_text(errors="replace")

    def logged(self, wanted: str) -> bool:
        return log_has(self.output(), wanted)

    def tail(self, chars: int = 4000) -> str:
        """The end of the log, for assertion messages."""
        return self.output()[-chars:]

    def members(self) -> dict[int, str]:
        """The live processes of the service's group: pid -> command line."""
        return REGISTRY.members(self.pgid)


def launch(model: Path, log: Path, **extra: str) -> Served:
    """Start ``triage serve`` with the model at ``model``, its output to ``log``; does not wait for it."""
    port = free_port()
    with log.open("wb") as out:
        env = server_env(model, port, **extra)
        proc = spawn_group(SERVE, f"triage serve :{port}", cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Served(proc, f"http://127.0.0.1:{port}", log)


def wait_healthy(served: Served, patience_s: float | None = None) -> None:
    """Wait until ``/health`` answers 200; fails when the service exits first or takes over ``patience_s``
    (``START_S``)."""
    patience_s = START_S if patience_s is None else patience_s
    deadline = time.monotonic() + patience_s
    while True:
        if served.proc.poll() is not None:
            raise AssertionError(f"triage serve exited with {served.proc.returncode}:\n{served.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"triage serve was not healthy after {patience_s:g} s:\n{served.tail()}")
        try:
            if httpx.get(served.url + "/health", timeout=10).status_code == 200:
                served.members()  # remember its processes (the owners of its temporary folders)
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@contextmanager
def serving(model: Path, log: Path, **extra: str) -> Iterator[Served]:
    """A healthy ``triage serve``; afterwards its whole process group is stopped, whatever happened. Raises when it
    had to be killed (it did not stop on SIGTERM, or left processes behind)."""
    served = launch(model, log, **extra)
    try:
        wait_healthy(served)
        yield served
    finally:
        problem = stop_group(served.proc)
    if problem:
        raise AssertionError(f"triage serve did not stop cleanly: {problem}\n{served.tail()}")
