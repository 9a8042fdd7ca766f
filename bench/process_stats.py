"""Server processes for the benchmarks: launch and stop a session, its members, summed RSS and PSS sampled in
the background, time to a first answer.

RSS is summed over every live process of a session or process group, so pages two processes share (the Python
interpreter, libraries, a model mapped by forked workers) are counted once per process: an upper bound. PSS
(proportional set size, ``/proc/<pid>/smaps_rollup``) charges each shared page to its sharers in equal parts, so
its sum over a session is what the session costs the machine, pages shared with processes outside it aside.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    pgid: int
    sid: int
    rss: int  # bytes


def parse_stat(pid: int, text: str) -> ProcStat:
    """One ``/proc/<pid>/stat`` line (the command name may hold spaces and parentheses)."""
    comm, _, rest = text.rpartition(")")
    fields = rest.split()  # fields[0] is field 3 (state) of proc(5)
    return ProcStat(pid, comm.partition("(")[2], fields[0], int(fields[2]), int(fields[3]), int(fields[21]) * PAGE)


def session_stats(sid: int) -> list[ProcStat]:
    """Every live (not zombie) process whose session or process group is ``sid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            proc = parse_stat(int(stat.parent.name), stat.read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone in between
        if proc.state != "Z" and sid in (proc.pgid, proc.sid):
            found.append(proc)
    return found


def pss_bytes(pid: int) -> int:
    """The proportional set size of ``pid`` in bytes; 0 if it is gone (or its memory map cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def session_members(sid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in session or process group ``sid``."""
    return [(p.pid, p.comm) for p in session_stats(sid)]


class RssSampler(threading.Thread):
    """Samples the summed RSS and PSS of session ``sid`` every ``interval`` seconds until ``stop()``; keeps the
    peaks."""

    def __init__(self, sid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True, name=f"rss-{sid}")
        self.sid, self.interval = sid, interval
        self.peak_rss, self.peak_pss, self.peak_processes, self.samples = 0, 0, 0, 0
        self._done = threading.Event()

    def sample(self) -> None:
        procs = session_stats(self.sid)
        self.peak_rss = max(self.peak_rss, sum(p.rss for p in procs))
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(p.pid) for p in procs))
        self.peak_processes = max(self.peak_processes, len(procs))
        self.samples += 1

    def run(self) -> None:
        while True:
            self.sample()
            if self._done.wait(self.interval):
                return

    def stop(self) -> int:
        """Stops sampling (after one last sample); returns the peak summed RSS in bytes."""
        self._done.set()
        if self.is_alive():
            self.join()
        return self.peak_rss


def poll_until(
    attempt: Callable[[], bool], alive: Callable[[], bool], t0: float, timeout: float, interval: float = 0.05
) -> float | None:
    """Calls ``attempt`` every ``interval`` seconds while ``alive()``; seconds from ``t0`` (``time.monotonic``)
    to the end of the first successful attempt, or None after ``timeout`` seconds from ``t0``."""
    while time.monotonic() - t0 < timeout and alive():
        if attempt():
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a process group: ``(pid, command)``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append((int(stat.parent.name), command))
    return members


def launch(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Starts ``cmd`` leading its own session, output to ``log``, with this environment less TRIAGE_*, OMP_* and
    PROMETHEUS_MULTIPROC_DIR, plus ``env``; returns the process and its launch time (``time.monotonic``)."""
    drop = ("TRIAGE_", "OMP_", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)} | env
    with log.open("wb") as out:
        t0 = time.monotonic()
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), t0


def stop_session(proc: subprocess.Popen[bytes], pid: int, grace: float = 30.0) -> list[tuple[int, str]]:
    """SIGTERM ``pid``, wait for the whole session of ``proc`` to exit; SIGKILL and return what was left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (left := session_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for member, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    proc.wait(timeout=10)
    return left
