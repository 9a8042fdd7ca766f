"""PatientBatchedLoop: how a worker gathers a batch from the request queue."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest

from service.runtime import batching
from service.runtime.batching import PatientBatchedLoop
from service.runtime.held_requests import read_held
from service.runtime.internals import STOP_WORKER, StopLoop


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []

    def send(self, item: Any, consumer_id: int) -> None:
        self.sent.append((item, consumer_id))


def api(
    max_batch_size: int = 4, batch_timeout: float = 0.05, request_timeout: float = 30.0, held_dir: Path | None = None
) -> SimpleNamespace:
    return SimpleNamespace(
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
        request_timeout=request_timeout,
        stream=False,
        held_dir=held_dir,
    )


def request(uid: str, queued_at: float | None = None, consumer: int = 0) -> tuple[int, str, float, str]:
    return (consumer, uid, time.monotonic() if queued_at is None else queued_at, f"payload-{uid}")


@pytest.fixture
def loop() -> PatientBatchedLoop:
    patient = PatientBatchedLoop()
    patient._restart_workers = True  # as under the supervisor: LitServe's loops would then send START messages
    return patient


def test_an_idle_queue_gives_an_empty_batch_after_the_idle_wait(
    loop: PatientBatchedLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "IDLE_WAIT_S", 0.05)
    started = time.monotonic()
    payloads, timed_out = loop.get_batch_requests(api(), Queue(), RecordingTransport())
    waited = time.monotonic() - started
    assert (payloads, timed_out) == ([], [])
    assert waited >= 0.04


def test_queued_requests_are_taken_up_to_the_batch_size_in_order_and_recorded_as_held(
    loop: PatientBatchedLoop, tmp_path: Path
) -> None:
    queue: Queue = Queue()
    for i in range(6):
        queue.put(request(f"r{i}", consumer=i % 2))
    transport = RecordingTransport()
    payloads, timed_out = loop.get_batch_requests(api(max_batch_size=4, held_dir=tmp_path), queue, transport)
    assert [uid for _, uid, _ in payloads] == ["r0", "r1", "r2", "r3"]
    assert [payload for _, _, payload in payloads] == [f"payload-r{i}" for i in range(4)]
    assert timed_out == []
    assert queue.qsize() == 2
    assert transport.sent == []  # no START message through the queue manager per request
    assert read_held(tmp_path, os.getpid()) == {0: ["r0", "r2"], 1: ["r1", "r3"]}

    # the next, smaller batch replaces the record
    payloads, _ = loop.get_batch_requests(api(max_batch_size=4, held_dir=tmp_path), queue, transport)
    assert [uid for _, uid, _ in payloads] == ["r4", "r5"]
    assert read_held(tmp_path, os.getpid()) == {0: ["r4"], 1: ["r5"]}


def test_without_a_held_dir_nothing_is_recorded(loop: PatientBatchedLoop, tmp_path: Path) -> None:
    queue: Queue = Queue()
    queue.put(request("r0"))
    payloads, _ = loop.get_batch_requests(api(), queue, RecordingTransport())
    assert len(payloads) == 1 and list(tmp_path.iterdir()) == []


def queue_with_one_more_after(delay: float) -> Queue:
    """A queue holding request "first", and "second" put into it ``delay`` seconds from now."""
    queue: Queue = Queue()
    queue.put(request("first"))
    timer = threading.Timer(delay, lambda: queue.put(request("second")))
    timer.daemon = True
    timer.start()
    return queue


def test_a_batch_closes_at_the_batch_timeout_after_its_first_request(loop: PatientBatchedLoop) -> None:
    queue = queue_with_one_more_after(0.4)
    started = time.monotonic()
    payloads, _ = loop.get_batch_requests(api(max_batch_size=8, batch_timeout=0.05), queue, RecordingTransport())
    assert [uid for _, uid, _ in payloads] == ["first"]
    assert time.monotonic() - started < 0.35


def test_a_request_arriving_within_the_batch_timeout_joins_the_batch(loop: PatientBatchedLoop) -> None:
    queue = queue_with_one_more_after(0.02)
    payloads, _ = loop.get_batch_requests(api(max_batch_size=8, batch_timeout=0.5), queue, RecordingTransport())
    assert [uid for _, uid, _ in payloads] == ["first", "second"]


def test_a_request_that_waited_past_the_request_timeout_is_set_apart(loop: PatientBatchedLoop) -> None:
    queue: Queue = Queue()
    queue.put(request("stale", queued_at=time.monotonic() - 10.0, consumer=3))
    queue.put(request("fresh"))
    payloads, timed_out = loop.get_batch_requests(
        api(request_timeout=5.0, batch_timeout=0.0), queue, RecordingTransport()
    )
    assert [uid for _, uid, _ in payloads] == ["fresh"]
    assert timed_out == [(3, "stale")]


def test_the_stop_sentinel_ends_the_loop(loop: PatientBatchedLoop) -> None:
    queue: Queue = Queue()
    queue.put(request("r0"))
    queue.put(STOP_WORKER)
    with pytest.raises(StopLoop):
        loop.get_batch_requests(api(), queue, RecordingTransport())


def test_the_stop_sentinel_removes_the_workers_record(loop: PatientBatchedLoop, tmp_path: Path) -> None:
    queue: Queue = Queue()
    queue.put(request("r0"))
    loop.get_batch_requests(api(held_dir=tmp_path), queue, RecordingTransport())
    assert read_held(tmp_path, os.getpid()) == {0: ["r0"]}
    queue.put(STOP_WORKER)
    with pytest.raises(StopLoop):
        loop.get_batch_requests(api(held_dir=tmp_path), queue, RecordingTransport())
    assert list(tmp_path.iterdir()) == []
