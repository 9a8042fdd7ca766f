"""Packet-mode pipes as LitServe's request queues and response transport: whole messages, one reader each, large
ones through a file, and no lock a killed process could take with it."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import select
import signal
import time
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

import pytest

from service.runtime import packet_pipes
from service.runtime.internals import init_manager, response_transport
from service.runtime.packet_pipes import (
    PACKET_BYTES,
    SPILL_PREFIX,
    PacketPipe,
    PacketQueue,
    PacketTransport,
    PipeFull,
    RequestQueueFull,
    use_packet_pipes,
)

PATIENCE_S = 120.0  # for spawned processes to start and stop (seconds on a loaded machine)
# "At once" or "after the short wait asked for", as opposed to waiting SEND_WAIT_S (5 s) or for ever; with room for
# a loaded machine's scheduling delays.
PROMPT_S = 4.0
SPAWN = mp.get_context("spawn")  # how LitServe starts inference workers: the pipes travel as file descriptors


def _echo_worker(queue: PacketQueue, transport: PacketTransport) -> None:
    """Say ready on pipe 0, then answer each request ``(consumer, uid, payload)`` with ``(uid, payload, pid)`` on
    the consumer's pipe, taking a little time over each."""
    transport.send(("ready", os.getpid()), 0)
    while True:
        item = queue.get(timeout=PATIENCE_S)
        if item is None:
            return
        consumer, uid, payload = item
        time.sleep(0.01)
        transport.send((uid, payload, os.getpid()), consumer)


def _blocked_reader(queue: PacketQueue, waiting: mp.synchronize.Event) -> None:
    waiting.set()
    queue.get()


def stop_all(workers: list[mp.process.BaseProcess]) -> None:
    """Kill whichever of ``workers`` is still running and reap them all."""
    for worker in workers:
        if worker.is_alive():
            worker.kill()
        worker.join()


def fill(pipe: PacketPipe) -> int:
    """Write small messages until the pipe has no room; returns how many it took."""
    count = 0
    with pytest.raises(PipeFull):
        while True:
            pipe.write(count)
            count += 1
    return count


def spills(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{SPILL_PREFIX}*"))


def test_small_and_large_messages_arrive_whole_and_in_order(tmp_path: Path) -> None:
    queue = PacketQueue(tmp_path)
    large = bytes(range(256)) * (3 * PACKET_BYTES // 256)  # pickled, more than one packet
    messages = [("a", 1), {"photo": large}, None, "b" * (PACKET_BYTES - 64), list(range(2000))]
    for message in messages:
        queue.put(message)
    assert len(spills(tmp_path)) == 2  # the two that do not fit in a packet wait in files
    assert [queue.get(timeout=1) for _ in messages] == messages
    assert spills(tmp_path) == []  # the reader removed them


def test_an_empty_queue_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue = PacketQueue(tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr(select, "poll", None)  # get_nowait must not wait at all (a batch closes on it)
        with pytest.raises(Empty):
            queue.get_nowait()
        with pytest.raises(Empty):
            queue.get(block=False)
    started = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=0.2)
    assert 0.19 <= time.monotonic() - started < PROMPT_S


def test_each_request_reaches_exactly_one_of_several_spawned_workers(tmp_path: Path) -> None:
    queue, transport = PacketQueue(tmp_path), PacketTransport(2, tmp_path)
    workers = [SPAWN.Process(target=_echo_worker, args=(queue, transport)) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        ready: list[int] = []
        deadline = time.monotonic() + PATIENCE_S
        while len(ready) < len(workers) and time.monotonic() < deadline:
            message = asyncio.run(transport.areceive(0))
            if message is not None:
                ready.append(message[1])
        assert sorted(ready) == sorted(worker.pid for worker in workers)
        sent = {f"uid-{i}": (i % 2, b"x" * (i * 997)) for i in range(60)}  # some payloads need files
        for uid, (consumer, payload) in sent.items():
            queue.put((consumer, uid, payload))

        async def collect(consumer: int, count: int) -> list[tuple[str, bytes, int]]:
            got = []
            while len(got) < count:
                message = await transport.areceive(consumer)
                if message is not None:
                    got.append(message)
            return got

        answers = {consumer: asyncio.run(asyncio.wait_for(collect(consumer, 30), PATIENCE_S)) for consumer in (0, 1)}
        for _ in workers:
            queue.put(None)
        for worker in workers:
            worker.join(PATIENCE_S)
        assert [worker.exitcode for worker in workers] == [0] * len(workers)
    finally:
        stop_all(workers)
    for consumer, got in answers.items():
        assert sorted(uid for uid, _, _ in got) == sorted(uid for uid, (c, _) in sent.items() if c == consumer)
        assert all(payload == sent[uid][1] for uid, payload, _ in got)
    assert len({pid for got in answers.values() for _, _, pid in got}) == 3  # the requests were shared out
    assert spills(tmp_path) == []


def test_a_reader_killed_while_waiting_leaves_the_queue_working(tmp_path: Path) -> None:
    queue, waiting = PacketQueue(tmp_path), SPAWN.Event()
    reader = SPAWN.Process(target=_blocked_reader, args=(queue, waiting))
    reader.start()
    try:
        assert waiting.wait(PATIENCE_S), "the reader never started"
        time.sleep(0.2)  # from setting the event to waiting in the queue
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(PATIENCE_S)
    finally:
        stop_all([reader])
    assert reader.exitcode == -signal.SIGKILL
    queue.put("after the kill")
    assert queue.get(timeout=5) == "after the kill"


def test_areceive_gives_none_when_nothing_comes(tmp_path: Path) -> None:
    transport = PacketTransport(1, tmp_path)
    started = time.monotonic()
    assert asyncio.run(transport.areceive(0, timeout=0.1)) is None
    assert time.monotonic() - started < PROMPT_S
    transport.send(("uid", "answer"), 0)
    assert asyncio.run(transport.areceive(0, timeout=0.1)) == ("uid", "answer")


def test_close_does_not_wait_on_a_full_pipe(tmp_path: Path) -> None:
    transport = PacketTransport(2, tmp_path)
    fill(transport.pipes[0])
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < PROMPT_S
    assert transport.pipes[1].read(timeout=1) is None  # the other consumer got its sentinel
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(transport.areceive(1))


def test_use_packet_pipes_replaces_litserve_queues(tmp_path: Path) -> None:
    import litserve as ls

    class Echo(ls.LitAPI):
        def setup(self, device: str) -> None: ...

        def predict(self, x: object) -> object:
            return x

    server = ls.LitServer([Echo(api_path="/a"), Echo(api_path="/b")], accelerator="cpu")
    manager = init_manager(server, 3)
    try:
        assert use_packet_pipes(server, tmp_path, consumers=3)
        assert {type(q) for q in server.litapi_request_queues.values()} == {PacketQueue}
        assert set(server.litapi_request_queues) == {"/a", "/b"}
        transport = response_transport(server)
        assert isinstance(transport, PacketTransport) and len(transport.pipes) == 3
    finally:
        manager.shutdown()


def test_a_full_request_queue_is_a_503_at_once_and_leaves_no_file(tmp_path: Path) -> None:
    queue = PacketQueue(tmp_path)
    assert fill(queue.pipe) == 256
    started = time.monotonic()
    with pytest.raises(RequestQueueFull) as raised:
        queue.put({"photo": b"x" * (2 * PACKET_BYTES)})  # would need a file
    assert time.monotonic() - started < PROMPT_S
    assert raised.value.status_code == 503 and raised.value.headers == {"Retry-After": "1"}
    assert "256 requests are already waiting" in raised.value.detail
    assert spills(tmp_path) == []
    assert queue.get_nowait() == 0  # what was queued is still there, in order


def test_an_answer_waits_for_room_then_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(packet_pipes, "SEND_WAIT_S", 0.2)
    transport = PacketTransport(1, tmp_path)
    fill(transport.pipes[0])
    started = time.monotonic()
    transport.send(("uid", "answer"), 0)  # no room: waits, then gives up without raising
    assert 0.19 <= time.monotonic() - started < PROMPT_S
    assert "dropped a message to HTTP process 0" in caplog.text


def test_a_message_that_cannot_be_read_back_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue = PacketQueue(tmp_path)
    queue.put(b"x" * (2 * PACKET_BYTES))
    queue.put("next")
    for spilled in spills(tmp_path):
        spilled.unlink()  # e.g. someone cleaned /dev/shm
    assert queue.get(timeout=1) == "next"
    assert "could not be read back" in caplog.text


def test_without_pipe_buffers_litserve_queues_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packet_pipes, "PIPE_BYTES", 1 << 40)  # more than any system allows an unprivileged process
    server = SimpleNamespace(litapi_request_queues={"/a": "manager queue"}, _transport="manager transport")
    assert not use_packet_pipes(server, tmp_path, consumers=2)
    assert server.litapi_request_queues == {"/a": "manager queue"} and server._transport == "manager transport"
