"""Photo bytes from the HTTP process to the inference worker through a RAM-backed directory, not LitServe's queue.

LitServe's request queue is a ``multiprocessing.Manager`` queue: a 3 MB phone photo put on it is pickled by the
HTTP process, sent to the queue manager process, unpickled there, pickled again for the worker that takes it,
sent and unpickled once more, one step after the other, before the worker can start decoding. Writing the bytes to
a file in ``/dev/shm`` and queueing only the file's name, which the worker reads back, costs about the same CPU
but far less waiting: ``docs/BENCHMARKS.md`` has the figures (``bench/service_load.py`` with ``handoff=0|1``).

The HTTP process owns each file: it writes the file before the request is queued and removes it once the request
is answered, whatever the outcome (answered, rejected, timed out, its worker killed), so a worker never has to
clean up and a worker that dies leaks nothing. Files are named after the HTTP process's pid; the supervisor sweeps
what a killed HTTP process left behind (``sweep``). Where the directory is missing, unwritable or full (a
container's ``/dev/shm`` is 64 MB unless set otherwise), the photo travels in the queue as before.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from pathlib import Path

from fastapi import Request

from service.uploads import TicketUpload, UploadedPhoto, read_upload

log = logging.getLogger(__name__)

PREFIX = "triage-photo-"


class PhotoHandoff:
    """Writes a ticket's photos to ``directory`` for the worker and removes them when the request is done.

    ``directory=None`` turns the hand-off off: every photo then travels in the request queue.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory if directory is not None and _usable(directory) else None
        self._warned = False

    def share(self, upload: TicketUpload) -> TicketUpload:
        """``upload`` with each readable photo's bytes moved to a file; photos that cannot be written stay inline."""
        if self.directory is None:
            return upload
        directory = self.directory
        return replace(upload, photos=tuple(self._share(photo, directory) for photo in upload.photos))

    def release(self, upload: TicketUpload) -> None:
        """Remove the files ``share`` wrote for ``upload`` (idempotent)."""
        for photo in upload.photos:
            if photo.shared is not None:
                with suppress(FileNotFoundError):
                    os.unlink(photo.shared)

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
        path = directory / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(photo.data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if not self._warned:
                log.warning("photo hand-off through %s failed (%s); sending photos in the queue", directory, exc)
                self._warned = True
            return photo
        return replace(photo, data=b"", shared=str(path))


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


def handoff_of(request: Request) -> PhotoHandoff:
    """The app's hand-off (``app.state.photo_handoff``), or one that keeps every photo inline."""
    handoff = getattr(request.app.state, "photo_handoff", None)
    return handoff if isinstance(handoff, PhotoHandoff) else PhotoHandoff(None)


async def shared_upload(request: Request) -> AsyncIterator[TicketUpload]:
    """FastAPI dependency: ``read_upload``'s ticket, its photos handed over until the request is answered."""
    upload = await read_upload(request)
    async with handoff_of(request).shared(upload) as shared:
        yield shared
