"""Which requests an inference worker has taken, kept where the supervisor can read them once the worker is dead.

LitServe's own way is a START message per request, from the worker through the queue manager to the request's
HTTP process: two more round trips to the manager and a thread hop in the HTTP process for every photo, about
1 ms of CPU per phone photo in all (``docs/BENCHMARKS.md``). Instead each worker writes the requests of the batch
it has just taken into a small file of its own, one ``pwrite`` per batch, in a directory the supervisor made
(``/dev/shm`` where there is one, so nothing reaches a disk). When a worker dies, the supervisor reads its file
and tells each HTTP process which of its requests are lost (``service.runtime.worker_loss``).

The file holds ``"<response queue id> <request uid>\\n"`` per request (the response queue id is LitServe's index
of the HTTP process that waits for the answer, not a process id) and a line ``"."`` after the last one: each
batch overwrites the file from its start, so whatever an earlier, longer batch left after that line is ignored.
A batch that was answered before the worker died stays listed; the HTTP processes ignore uids they no longer hold.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from service.runtime.parent_death import sweep_dirs_of_dead_owners

_END = b".\n"
HELD_PREFIX = "triage-held-"
_SHARED_MEMORY = Path("/dev/shm")


def make_held_dir() -> Path:
    """A new private directory for the workers' files, in ``/dev/shm`` where the system has it, named after this
    process (``sweep_orphan_held_dirs`` removes those of services that no longer run)."""
    return Path(tempfile.mkdtemp(prefix=f"{HELD_PREFIX}{os.getpid()}-", dir=_held_base()))


def _held_base() -> Path | None:
    return _SHARED_MEMORY if _SHARED_MEMORY.is_dir() and os.access(_SHARED_MEMORY, os.W_OK) else None


def sweep_orphan_held_dirs(base: Path | None = None) -> int:
    """Remove the held-request directories of services that were killed outright; returns how many."""
    return sweep_dirs_of_dead_owners(base or _held_base() or Path(tempfile.gettempdir()), HELD_PREFIX)


def held_path(directory: Path, pid: int) -> Path:
    return directory / f"worker-{pid}"


class HeldRequests:
    """The calling process's file in ``directory``; created on the first batch."""

    def __init__(self, directory: Path) -> None:
        self.path = held_path(directory, os.getpid())
        self._fd: int | None = None

    def hold(self, taken: Iterable[tuple[int, str]]) -> None:
        """Record the batch just taken: ``(response queue id, request uid)`` per request."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.pwrite(self._fd, "".join(f"{consumer} {uid}\n" for consumer, uid in taken).encode() + _END, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def take_held(directory: Path, pid: int) -> dict[int, list[str]]:
    """The uids the dead worker ``pid`` last took, by response queue id; its file is removed."""
    held = read_held(directory, pid)
    held_path(directory, pid).unlink(missing_ok=True)
    return held


def read_held(directory: Path, pid: int) -> dict[int, list[str]]:
    """The uids worker ``pid`` last took, by response queue id (none when it has no file)."""
    try:
        data = held_path(directory, pid).read_bytes()
    except FileNotFoundError:
        return {}
    held: dict[int, list[str]] = {}
    for line in data.split(b"\n"):
        if line + b"\n" == _END:
            break
        consumer, _, uid = line.decode("utf-8", "replace").partition(" ")
        if consumer.isdigit() and uid:
            held.setdefault(int(consumer), []).append(uid)
    return held
