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

A pipe holds up to 256 packets (1 MiB, the system's default limit for an unprivileged process); a writer finding it
full waits for a reader to make room.
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
from litserve.transport.base import MessageTransport

log = logging.getLogger(__name__)

PACKET_BYTES = select.PIPE_BUF
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_INLINE, _IN_FILE = b"P", b"F"
SPILL_PREFIX = "message-"


class PacketPipe:
    """One packet-mode pipe: ``write`` sends a picklable message, ``read`` takes one (``Empty`` if none arrives in
    ``timeout`` seconds). Messages over ``PACKET_BYTES`` pickled go through a file in ``spill_dir``."""

    def __init__(self, spill_dir: Path) -> None:
        self.spill_dir = spill_dir
        self.read_fd, self.write_fd = os.pipe2(os.O_DIRECT | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a lower system limit: the pipe keeps its default 64 KiB (16 packets)
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(self.read_fd, False)  # readers wait in poll(), so that a wait can time out

    def write(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) < PACKET_BYTES:
            packet = _INLINE + data
        else:
            path = self.spill_dir / f"{SPILL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with memoryview(data) as view:
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            packet = _IN_FILE + os.fsencode(path)
        os.write(self.write_fd, packet)

    def read_now(self) -> tuple[bool, Any]:
        """``(True, message)``, or ``(False, None)`` when the pipe is empty."""
        try:
            packet = os.read(self.read_fd, PACKET_BYTES)
        except BlockingIOError:
            return False, None
        kind, body = packet[:1], packet[1:]
        if kind == _IN_FILE:
            path = os.fsdecode(body)
            with open(path, "rb") as file:
                body = file.read()
            os.unlink(path)
        elif kind != _INLINE:
            raise ValueError(f"not a message of this pipe: a packet of {len(packet)} bytes starting {kind!r}")
        return True, pickle.loads(body)

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
    return pipe


class PacketQueue:
    """An endpoint's request queue with the part of ``queue.Queue``'s interface LitServe uses."""

    def __init__(self, spill_dir: Path) -> None:
        self.pipe = PacketPipe(spill_dir)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.pipe.write(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.pipe.read(timeout if block else 0.0)

    def get_nowait(self) -> Any:
        return self.pipe.read(0.0)


class PacketTransport(MessageTransport):
    """LitServe's response transport: one pipe per HTTP process (its ``consumer_id``)."""

    def __init__(self, consumers: int, spill_dir: Path) -> None:
        self.pipes = [PacketPipe(spill_dir) for _ in range(consumers)]
        self._closed = False

    def send(self, item: Any, consumer_id: int) -> None:
        self.pipes[consumer_id].write(item)

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
                await asyncio.wait_for(readable, 1.0 if timeout is None else min(timeout, 1.0))
            except TimeoutError:
                return None
            finally:
                loop.remove_reader(pipe.read_fd)
            return pipe.read_now()[1]
        except asyncio.CancelledError:
            raise
        except Exception:  # LitServe's reader would stop on it: drop the message, keep reading
            log.exception("dropped an unreadable message on response pipe %d", consumer_id)
            return None

    def close(self, send_sentinel: bool = True) -> None:
        self._closed = True
        if send_sentinel:
            for pipe in self.pipes:
                room = select.poll()
                room.register(pipe.write_fd, select.POLLOUT)
                if room.poll(0):  # never wait for a reader that may be gone
                    pipe.write(None)


def use_packet_pipes(server: ls.LitServer, spill_dir: Path, consumers: int) -> None:
    """Replace the request queues and the response transport that ``server._init_manager`` made."""
    for path in list(server.litapi_request_queues):
        server.litapi_request_queues[path] = PacketQueue(spill_dir)
    server._transport = PacketTransport(consumers, spill_dir)
