"""Process groups the tests start, stopped whatever happens, and a check at the end of the session that none of them,
and none of the temporary folders and files their services make, is left behind.

A pytest plugin (``tests/conftest.py`` loads it). Only what the tests themselves started counts: other people's
services on the same machine make folders with the same prefixes. A folder or file counts as the tests' when its name
carries the id of a process the tests started (a service names them after the process that made them: the
supervisor for its held-request and metrics folders, an HTTP process for each photo it hands over) or of this pytest
process (in-process servers), and it was not there when the session started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# What the service names its temporary folders and files (pinned to service's own constants by
# tests/test_started_processes.py; spelt out here so that this plugin imports nothing from the package).
HELD_PREFIX = "triage-held-"  # service.runtime.held_requests.HELD_PREFIX: the supervisor's private folder
METRICS_DIR_PREFIX = "triage-metrics-"  # service.metrics.METRICS_DIR_PREFIX: Prometheus multiprocess folder
PHOTO_PREFIX = "triage-photo-"  # service.runtime.photo_handoff.PREFIX: a photo handed to an inference worker
PREFIXES = (HELD_PREFIX, METRICS_DIR_PREFIX, PHOTO_PREFIX)
SHARED_MEMORY = Path("/dev/shm")

STOP_GRACE_S = 60.0  # after SIGTERM, before the whole group gets SIGKILL (the service drains for at most 8.5 s)
ORPHANS_WAIT_S = 20.0  # after the leader exited, for the members it left to exit too
GONE_WAIT_S = 30.0  # after SIGKILL, for the kernel to take every member


def temp_bases() -> list[Path]:
    """Where the service's temporary folders and files go: ``/dev/shm`` and the temporary directory."""
    bases = [SHARED_MEMORY, Path(tempfile.gettempdir())]
    return [base for base in dict.fromkeys(bases) if base.is_dir()]


def owner_pid(name: str) -> int | None:
    """The process id in ``<prefix><pid>-...``, or None for a name of no known prefix."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            digits = name[len(prefix) :].split("-", 1)[0]
            return int(digits) if digits.isdigit() else None
    return None


def temp_entries(bases: Sequence[Path]) -> dict[Path, int]:
    """Every folder or file of the service's in ``bases``, with the id of the process it is named after."""
    found = {}
    for base in bases:
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            pid = owner_pid(name)
            if pid is not None:
                found[base / name] = pid
    return found


def group_members(pgid: int) -> dict[int, str]:
    """The live (not zombie) processes of process group ``pgid``: pid -> command line."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # exited while being read
        members[int(stat.parent.name)] = command.strip()[:160]
    return members


@dataclass
class Registry:
    """The process groups started during this session and the ids of every member seen in them."""

    groups: dict[int, str] = field(default_factory=dict)  # pgid -> what was started
    seen: dict[int, set[int]] = field(default_factory=dict)  # pgid -> every member seen in it
    before: set[Path] = field(default_factory=set)  # the service's entries that were there at the start

    def watch(self, pgid: int, what: str) -> None:
        self.groups[pgid] = what
        self.seen[pgid] = {pgid}

    def members(self, pgid: int) -> dict[int, str]:
        """``group_members(pgid)``, remembering each as a possible owner of temporary folders."""
        found = group_members(pgid)
        self.seen.setdefault(pgid, {pgid}).update(found)
        return found

    @property
    def owners(self) -> set[int]:
        return set().union(*self.seen.values())

    def leftovers(self) -> tuple[dict[int, dict[int, str]], list[Path]]:
        """Groups with a live member and the tests' temporary folders and files still there."""
        alive = {pgid: members for pgid in self.groups if (members := self.members(pgid))}
        owners = self.owners | {os.getpid()}
        entries = temp_entries(temp_bases())
        left = sorted(path for path, pid in entries.items() if pid in owners and path not in self.before)
        return alive, left

    def remove_entries_of(self, pids: set[int]) -> list[Path]:
        """Remove the temporary folders and files named after ``pids`` (what a service killed outright leaves,
        and its next start would sweep); returns them."""
        removed = [path for path, pid in temp_entries(temp_bases()).items() if pid in pids and path not in self.before]
        for path in removed:
            remove(path)
        return removed


REGISTRY = Registry()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def spawn_group(argv: Sequence[str], what: str, **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv)`` as the leader of a new process group, watched until the session ends."""
    proc = subprocess.Popen(list(argv), start_new_session=True, **popen)
    REGISTRY.watch(proc.pid, what)
    return proc


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_gone(pgid: int, patience_s: float = GONE_WAIT_S) -> dict[int, str]:
    """Wait until group ``pgid`` has no live member; returns those still alive after ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while (left := REGISTRY.members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def stop_group(
    proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S, orphans_s: float = ORPHANS_WAIT_S
) -> str | None:
    """Stop a group started by ``spawn_group`` whatever state it is in: SIGTERM to its leader, up to ``grace_s`` to
    exit, then SIGKILL to every process left in the group (the leader's children included, when the leader is gone
    and they are still there ``orphans_s`` later). When anything had to be killed (here, or the leader by a signal
    it does not handle), the temporary folders named after the group's processes are removed, as the service's
    next start would. Returns what went wrong (None when the leader stopped on SIGTERM or had already exited,
    leaving nothing running)."""
    pgid = proc.pid
    REGISTRY.members(pgid)  # remember who is in it before anyone leaves
    problem = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            problem = f"pid {pgid} did not exit within {grace_s:g} s of SIGTERM"
    # A leader that has exited took its children with it (or they are on their way: the parent-death signal).
    left = REGISTRY.members(pgid) if problem else wait_gone(pgid, orphans_s)
    if left:
        problem = problem or f"pid {pgid} exited leaving {sorted(left)} running"
        kill_group(pgid)
    proc.wait()
    if still := wait_gone(pgid):
        problem = f"{problem}; still alive after SIGKILL: {still}"
    if problem or proc.returncode < 0:  # killed by a signal it does not handle: it cleaned up nothing
        REGISTRY.remove_entries_of(REGISTRY.seen[pgid])
    return problem


def pytest_sessionstart(session: pytest.Session) -> None:
    REGISTRY.before = set(temp_entries(temp_bases()))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process group the tests started is still alive, or a temporary folder or file of the
    tests' services is still there; then kill and remove them, so that nothing outlives the run."""
    alive, left = REGISTRY.leftovers()
    if not alive and not left:
        return
    lines = ["processes or temporary folders the tests started were left behind:"]
    for pgid, members in alive.items():
        lines.append(f"  process group {pgid} ({REGISTRY.groups[pgid]}) still running:")
        lines.extend(f"    {pid} {command}" for pid, command in sorted(members.items()))
        kill_group(pgid)
    lines.extend(f"  left behind: {path}" for path in left)
    for pgid in alive:
        wait_gone(pgid)
    for path in left:
        remove(path)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line, red=True, bold=True)
    else:
        print("\n".join(lines))
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
