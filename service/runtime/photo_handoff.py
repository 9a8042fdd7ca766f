"""Photo bytes from the HTTP process to the inference worker through a RAM-backed directory, not LitServe's queue.

LitServe's request queue is a ``multiprocessing.Manager`` queue: a 3 MB phone photo put on it is pickled by the
HTTP process, sent to the queue manager process, unpickled there, pickled again for the worker that takes it,
sent and unpickled once more, one step after the other, before the worker can start decoding. Writing the bytes to
a file in ``/dev/shm`` and queueing only the file's name, which the worker reads back, costs about the same CPU
but far less waiting: ``docs/BENCHMARKS.md`` has the figures (``bench/service_load.py`` with ``handoff=0|1``).

A multipart photo is written to its file chunk by chunk while the request body arrives (``new_writer``, used by
``service.http.form_stream``), so it is copied once and mostly before its last byte is in; a JSON photo is written once
decoded (``share``). The HTTP process owns each file: it writes the file before the request is queued and removes
it once the request is answered, whatever the outcome (answered, rejected, timed out, its worker killed), so a
worker never has to clean up and a worker that dies leaks nothing. Files are named after the HTTP process's pid;
the supervisor sweeps what a killed HTTP process left behind (``sweep``). Where the directory is missing,
unwritable or full (a container's ``/dev/shm`` is 64 MB unless set otherwise), the photo travels in the queue as
before.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import litserve as ls
from fastapi import Request

from service.http.form_stream import MemoryWriter, PartWriter
from service.http.uploads import TicketUpload, UploadedPhoto, receive_upload
from service.runtime.parent_death import owner_pid, process_alive

log = logging.getLogger(__name__)

PREFIX = "triage-photo-"
# Files kept for the next photos once their request is answered, per HTTP process.
IDLE_FILES = 16
IDLE_BYTES = 16 * 1024 * 1024


class _FilePool:
    """Answered photos' files, kept for the next photos: tmpfs keeps a file's pages while it exists, so writing a
    photo into a used file is a copy, where a new file costs a page allocation per 4 KB (about 4 times the CPU).
    Files are never truncated (a photo is the first ``shared_size`` bytes of its file); past ``IDLE_FILES`` files
    or ``IDLE_BYTES`` bytes held, an answered photo's file is removed instead."""

    def __init__(self) -> None:
        self.idle: list[tuple[Path, int]] = []  # (file, its size), the most recently used last

    def take(self) -> Path | None:
        return self.idle.pop()[0] if self.idle else None

    def give(self, path: Path) -> None:
        if any(path == idle for idle, _ in self.idle):
            return  # given back already
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if len(self.idle) < IDLE_FILES and sum(s for _, s in self.idle) + size <= IDLE_BYTES:
            self.idle.append((path, size))
        else:
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        while self.idle:
            self.idle.pop()[0].unlink(missing_ok=True)


class PhotoHandoff:
    """Writes a ticket's photos to ``directory`` for the worker and removes them when the request is done.

    ``directory=None`` turns the hand-off off: every photo then travels in the request queue.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory if directory is not None and _usable(directory) else None
        self.pool = _FilePool()
        self._warned = False

    def new_writer(self) -> PartWriter:
        """A writer that streams one multipart photo into a file of its own (in memory when hand-off is off)."""
        return MemoryWriter() if self.directory is None else _FileWriter(self, self.directory)

    def share(self, upload: TicketUpload) -> TicketUpload:
        """``upload`` with each readable photo's bytes moved to a file; photos that cannot be written stay inline."""
        if self.directory is None:
            return upload
        directory = self.directory
        return replace(upload, photos=tuple(self._share(photo, directory) for photo in upload.photos))

    def release(self, upload: TicketUpload) -> None:
        """Give back the files ``upload``'s photos were written to, for reuse or removal (once per upload)."""
        for photo in upload.photos:
            if photo.shared is not None:
                self.pool.give(Path(photo.shared))

    def close(self) -> None:
        """Remove the idle files (the supervisor also sweeps every HTTP process's files when the service stops)."""
        self.pool.clear()

    @asynccontextmanager
    async def shared(self, upload: TicketUpload) -> AsyncIterator[TicketUpload]:
        """``share`` for the length of a request, then ``release``."""
        shared = self.share(upload)
        try:
            yield shared
        finally:
            self.release(shared)

    def _share(self, photo: UploadedPhoto, directory: Path) -> UploadedPhoto:
        if photo.error is not None or not photo.data:
            return photo
        writer = _FileWriter(self, directory)
        writer.write(memoryview(photo.data))
        _, shared = writer.close()
        return photo if shared is None else replace(photo, data=b"", shared=shared, shared_size=len(photo.data))

    def _failed(self, directory: Path, exc: OSError) -> None:
        if not self._warned:
            log.warning("photo hand-off through %s failed (%s); sending photos in the queue", directory, exc)
            self._warned = True


class _FileWriter:
    """A ``PartWriter`` into a hand-off file, an idle one from the pool or a new one, opened at the first chunk. If the
    directory cannot take the photo (full, gone), what was written is read back and the photo goes on in memory."""

    def __init__(self, handoff: PhotoHandoff, directory: Path) -> None:
        self._handoff, self._directory = handoff, directory
        self._path: Path | None = None
        self._fd: int | None = None
        self._written = 0  # bytes the file is known to hold
        self._memory: MemoryWriter | None = None

    def write(self, chunk: memoryview) -> None:
        if self._memory is not None:
            self._memory.write(chunk)
            return
        try:
            if self._fd is None:
                self._open()
            while chunk:
                n = os.write(self._fd, chunk)
                self._written += n
                chunk = chunk[n:]
        except OSError as exc:
            self._handoff._failed(self._directory, exc)
            self._to_memory(chunk)
            if self._path is not None:
                self._path.unlink(missing_ok=True)  # what the directory could not take is not kept for later
                self._path = None

    def _open(self) -> None:
        reused = self._handoff.pool.take()
        if reused is not None:
            try:
                self._path, self._fd = reused, os.open(reused, os.O_RDWR)
                return
            except FileNotFoundError:
                pass  # removed behind the pool's back: make a new one
            except OSError:
                self._handoff.pool.give(reused)  # still usable later (e.g. out of file descriptors now)
                raise
        self._path = self._directory / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def _to_memory(self, rest: memoryview) -> None:
        self._memory = MemoryWriter()
        if self._fd is not None and self._written:
            self._memory.write(memoryview(os.pread(self._fd, self._written, 0)))
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._memory.write(rest)

    def close(self) -> tuple[bytes, str | None]:
        if self._memory is not None:
            return self._memory.close()
        if self._fd is None:
            return b"", None
        os.close(self._fd)
        self._fd = None
        return b"", str(self._path)

    def discard(self) -> None:
        if self._memory is not None:
            self._memory.discard()
        self._drop_file()

    def _drop_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            self._handoff.pool.give(self._path)
            self._path = None


def _usable(directory: Path) -> bool:
    if directory.is_dir() and os.access(directory, os.W_OK | os.X_OK):
        return True
    log.warning("photo hand-off directory %s is missing or not writable; sending photos in the queue", directory)
    return False


def sweep(directory: Path | None, pids: Iterable[int]) -> int:
    """Remove the hand-off files that the HTTP processes ``pids`` left behind; returns how many."""
    if directory is None or not directory.is_dir():
        return 0
    removed = 0
    for pid in pids:
        for path in directory.glob(f"{PREFIX}{pid}-*"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def sweep_orphans(directory: Path | None) -> int:
    """Remove the hand-off files of processes that no longer exist (a service killed outright leaves them, and a
    pod's memory-backed ``/dev/shm`` outlives a container restart); returns how many."""
    if directory is None or not directory.is_dir():
        return 0
    dead = {
        pid
        for path in directory.glob(f"{PREFIX}*")
        if (pid := owner_pid(path.name, PREFIX)) is not None and not process_alive(pid)
    }
    return sweep(directory, dead)


class CloseHandoffOnStop(ls.Callback):
    """Removes an HTTP process's idle hand-off files when its server stops (LitServe's ``on_server_end``, run by
    each HTTP process's lifespan); the supervisor's ``sweep`` covers a process that is killed instead."""

    def on_server_end(self, *args: object, litserver: ls.LitServer | None = None, **kwargs: object) -> None:
        state = getattr(getattr(litserver, "app", None), "state", None)
        handoff = getattr(state, "photo_handoff", None)
        if isinstance(handoff, PhotoHandoff):
            handoff.close()


def handoff_of(request: Request) -> PhotoHandoff:
    """The app's hand-off (``app.state.photo_handoff``), or one that keeps every photo inline."""
    handoff = getattr(request.app.state, "photo_handoff", None)
    return handoff if isinstance(handoff, PhotoHandoff) else PhotoHandoff(None)


async def shared_upload(request: Request) -> AsyncIterator[TicketUpload]:
    """FastAPI dependency: the request's ticket, its photos handed over until the request is answered (multipart
    photos are written to their files as they arrive)."""
    handoff = handoff_of(request)
    upload = await receive_upload(request, handoff.new_writer)
    async with handoff.shared(upload) as shared:
        yield shared
