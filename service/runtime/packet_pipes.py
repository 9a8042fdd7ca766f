"""LitServe's request queues and response transport on Linux packet-mode pipes instead of its queue manager.

LitServe hands every request from an HTTP process to an inference worker, and every answer back, through
``multiprocessing.Manager`` queues: each ``put`` and each ``get`` is a round trip to the manager process, which
unpickles and pickles the message again on its way, and the HTTP process reads answers with an ``asyncio.to_thread``
hop per message. That is about 0.1 ms of CPU per message spread over three processes, and two process wake-ups of
waiting per hop (``bench/cpu_by_process.py``, ``docs/BENCHMARKS.md``).

A pipe opened with ``O_DIRECT`` (Linux 3.4+) is in packet mode: each ``write`` of up to ``PIPE_BUF`` bytes is one
packet, written whole or not at all, and each ``read`` returns exactly one packet. So any number of processes can
write to one pipe and any number can read from it, each message reaching exactly one reader, with no lock of our
own: the kernel's lock is held only inside a system call, so a process killed by SIGKILL at any moment leaves the
pipe usable by the others. (A plain ``multiprocessing.Queue`` guards its read end with a semaphore, which a worker
killed while waiting for a request never releases; that is why LitServe uses the manager, whose queues survive a
killed client.) A message that does not fit in one packet is written to a file in a private directory and only
the file's name travels; the reader removes the file.

``PacketQueue`` stands in for an endpoint's request queue (the HTTP processes ``put``, the workers ``get``);
``PacketTransport`` for LitServe's response transport (workers ``send`` to an HTTP process's pipe, which that
process reads from its event loop with ``add_reader``, no thread). ``use_packet_pipes`` swaps both into a server
whose manager is up and whose workers and HTTP processes are not started yet. Workers are spawned: their copy of a
pipe arrives as file descriptors passed to the new process (``multiprocessing.reduction.DupFd``); HTTP processes
are forked and inherit them.

A pipe holds up to 256 packets (1 MiB, the system's default limit for an unprivileged process). Nothing waits on a
full pipe for long: a request finding its endpoint's pipe full is answered 503 at once (``RequestQueueFull``; the
manager's queues had no bound), an answer waits up to ``SEND_WAIT_S`` for its HTTP process to make room. Where the
system will not give a pipe that buffer, the service keeps LitServe's queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import pickle
import select
import time
import uuid
from multiprocessing.reduction import DupFd
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
from fastapi import HTTPException

from service.runtime.internals import MessageTransport, replace_response_transport

log = logging.getLogger(__name__)

PACKET_BYTES = select.PIPE_BUF
PIPE_BYTES = 1 << 20  # 256 packets
SEND_WAIT_S = 5.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_INLINE, _IN_FILE = b"P", b"F"
SPILL_PREFIX = "message-"


class PipeFull(Exception):
    """The pipe has no room for another packet now."""


class RequestQueueFull(HTTPException):
    """An endpoint's request pipe holds as many requests as it can: the HTTP process answers 503 at once rather than
    wait (its event loop would stop serving every other request meanwhile)."""

    def __init__(self) -> None:
        super().__init__(
            503,
            f"{PIPE_BYTES // os.sysconf('SC_PAGE_SIZE')} requests are already waiting for this endpoint's inference "
            "workers; retry shortly",
            headers={"Retry-After": "1"},
        )


class PacketPipe:
    """One packet-mode pipe: ``write`` sends a picklable message, ``read`` takes one (``Empty`` if none arrives in
    ``timeout`` seconds). Messages over ``PACKET_BYTES`` pickled go through a file in ``spill_dir``. Both ends are
    non-blocking: a writer or reader that must wait does so in ``poll()``, with a time limit."""

    def __init__(self, spill_dir: Path) -> None:
        self.spill_dir = spill_dir
        self.read_fd, self.write_fd = os.pipe2(os.O_DIRECT | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, PIPE_BYTES)
            size = fcntl.fcntl(self.write_fd, _F_GETPIPE_SZ)
        except OSError as exc:
            self.close()
            raise OSError(f"cannot give a pipe {PIPE_BYTES} bytes of buffer: {exc}") from exc
        if size < PIPE_BYTES:
            self.close()
            raise OSError(f"a pipe got {size} bytes of buffer, not {PIPE_BYTES}")

    def write(self, message: Any, wait: float = 0.0) -> None:
        """Send ``message``; if the pipe is full, wait up to ``wait`` seconds for room, then ``PipeFull``."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        path = None
        if len(data) < PACKET_BYTES:
            packet = _INLINE + data
        else:
            path = self.spill_dir / f"{SPILL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
            path.write_bytes(data)  # the directory is private (0700) to the service's user
            packet = _IN_FILE + os.fsencode(path)
        try:
            self._write_packet(packet, wait)
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise

    def _write_packet(self, packet: bytes, wait: float) -> None:
        deadline = time.monotonic() + wait
        poller: select.poll | None = None
        while True:
            try:
                os.write(self.write_fd, packet)
                return
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PipeFull from None
            if poller is None:
                poller = select.poll()
                poller.register(self.write_fd, select.POLLOUT)
            poller.poll(math.ceil(remaining * 1000))

    def read_now(self) -> tuple[bool, Any]:
        """``(True, message)``, or ``(False, None)`` when the pipe is empty. A packet that cannot be read back (its
        file gone, a broken pickle) is logged and skipped."""
        while True:
            try:
                packet = os.read(self.read_fd, PACKET_BYTES)
            except BlockingIOError:
                return False, None
            try:
                kind, body = packet[:1], packet[1:]
                if kind == _IN_FILE:
                    path = Path(os.fsdecode(body))
                    body = path.read_bytes()
                    path.unlink()
                elif kind != _INLINE:
                    raise ValueError(f"a packet of {len(packet)} bytes starting {kind!r} is not a message of this pipe")
                return True, pickle.loads(body)
            except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
                log.exception("skipped a message that could not be read back")

    def read(self, timeout: float | None = None) -> Any:
        """The next message; waits up to ``timeout`` seconds (None: for ever, 0: not at all), then ``Empty``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller: select.poll | None = None
        while True:
            got, message = self.read_now()  # another reader may win the packet poll() announced: then wait again
            if got:
                return message
            wait_ms = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Empty
                wait_ms = math.ceil(remaining * 1000)
            if poller is None:
                poller = select.poll()
                poller.register(self.read_fd, select.POLLIN)
            poller.poll(wait_ms)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __reduce__(self) -> tuple[Any, ...]:
        # Only meaningful while spawning a process: the file descriptors are passed to the child.
        return (_attach, (DupFd(self.read_fd), DupFd(self.write_fd), self.spill_dir))


def _attach(read_fd: Any, write_fd: Any, spill_dir: Path) -> PacketPipe:
    pipe = PacketPipe.__new__(PacketPipe)
    pipe.read_fd, pipe.write_fd, pipe.spill_dir = read_fd.detach(), write_fd.detach(), spill_dir
    for fd in (pipe.read_fd, pipe.write_fd):
        os.set_inheritable(fd, False)  # passed to this process only, not to whatever it may exec
    return pipe


class PacketQueue:
    """An endpoint's request queue with the part of ``queue.Queue``'s interface LitServe uses. ``put`` never waits:
    a full queue is ``RequestQueueFull``, a 503 for the request being submitted."""

    def __init__(self, spill_dir: Path) -> None:
        self.pipe = PacketPipe(spill_dir)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        try:
            self.pipe.write(item)
        except PipeFull:
            raise RequestQueueFull() from None

    put_nowait = put

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.pipe.read(timeout if block else 0.0)

    def get_nowait(self) -> Any:
        return self.pipe.read(0.0)


class PacketTransport(MessageTransport):
    """LitServe's response transport: one pipe per HTTP process (its ``consumer_id``)."""

    def __init__(self, consumers: int, spill_dir: Path) -> None:
        self.pipes: list[PacketPipe] = []
        try:
            for _ in range(consumers):
                self.pipes.append(PacketPipe(spill_dir))
        except OSError:
            for pipe in self.pipes:
                pipe.close()
            raise
        self._closed = False

    def send(self, item: Any, consumer_id: int) -> None:
        """Send an answer (or a notice) to an HTTP process, waiting up to ``SEND_WAIT_S`` for room; an HTTP process
        that reads nothing for that long has stopped, and the message is dropped with a log line."""
        try:
            self.pipes[consumer_id].write(item, wait=SEND_WAIT_S)
        except PipeFull:
            log.error("dropped a message to HTTP process %d: its pipe stayed full for %g s", consumer_id, SEND_WAIT_S)

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True) -> Any:
        """The next message for this HTTP process, or None after ``timeout`` (at most 1 s) without one, so that
        LitServe's reader goes round; never raises but ``CancelledError`` (that reader stops for good on any
        other exception)."""
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        pipe = self.pipes[consumer_id]
        try:
            got, message = pipe.read_now()
            if got:
                return message
            loop = asyncio.get_running_loop()
            readable = loop.create_future()
            loop.add_reader(pipe.read_fd, lambda: readable.done() or readable.set_result(None))
            try:
                async with asyncio.timeout(1.0 if timeout is None else min(timeout, 1.0)):
                    await readable
            except TimeoutError:
                return None
            finally:
                loop.remove_reader(pipe.read_fd)
            return pipe.read_now()[1]
        except asyncio.CancelledError:
            raise
        except (OSError, ValueError, RuntimeError):  # LitServe's reader would stop for good on it: log, keep reading
            log.exception("could not wait on response pipe %d", consumer_id)
            return None

    def close(self, send_sentinel: bool = True) -> None:
        self._closed = True
        if send_sentinel:
            for pipe in self.pipes:
                with contextlib.suppress(PipeFull):  # never wait for a reader that may be gone
                    pipe.write(None)


def use_packet_pipes(server: ls.LitServer, spill_dir: Path, consumers: int) -> bool:
    """Replace the request queues and the response transport that ``server._init_manager`` made; False (LitServe's
    queues kept, a warning logged) where the system will not give the pipes their buffers."""
    queues: dict[str, PacketQueue] = {}
    try:
        for path in server.litapi_request_queues:
            queues[path] = PacketQueue(spill_dir)
        transport = PacketTransport(consumers, spill_dir)
    except OSError as exc:
        for queue in queues.values():
            queue.pipe.close()
        log.warning("requests and answers stay on LitServe's queue manager: %s", exc)
        return False
    server.litapi_request_queues.update(queues)
    replace_response_transport(server, transport)
    return True
