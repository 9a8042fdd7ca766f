"""The HTTP process's response buffer answers the requests a dead worker held, and only those, with 503."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

from fastapi import HTTPException

from service.runtime import worker_loss
from service.runtime.internals import LitAPIStatus, ResponseBufferItem
from service.runtime.worker_loss import WORKER_LOST_DETAIL, announce_lost_requests, install_in_flight


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []

    def send(self, item: Any, consumer_id: int) -> None:
        self.sent.append((item, consumer_id))


def _server() -> SimpleNamespace:
    server = SimpleNamespace(_transport=_Transport())
    install_in_flight(server)
    return server


def _submit(server: SimpleNamespace, uid: str, stream: bool = False) -> None:
    server.response_buffer[uid] = ResponseBufferItem(asyncio.Event(), deque() if stream else None)


def _deliver(server: SimpleNamespace, consumer: int) -> None:
    """What LitServe's reader of HTTP process ``consumer``'s response queue does with each message: look it up."""
    for (uid, _), to in server._transport.sent:
        if to == consumer:
            assert server.response_buffer.get(uid) is None  # the reader then skips the notice


def test_only_the_named_requests_still_waiting_get_503() -> None:
    server = _server()
    for uid in ("a", "b", "queued", "done"):
        _submit(server, uid)
    _submit(server, "stream", stream=True)
    server.response_buffer["done"].response = ("answer", LitAPIStatus.OK)
    server.response_buffer["done"].event.set()

    named = announce_lost_requests(server, {0: ["a", "stream", "done", "gone"], 2: ["elsewhere"]})
    assert named == 5
    assert [consumer for _, consumer in server._transport.sent] == [0, 2]
    _deliver(server, 0)

    buffer = server.response_buffer
    for uid in ("a", "stream"):
        error, status = buffer[uid].response
        assert isinstance(error, HTTPException) and error.status_code == 503 and error.detail == WORKER_LOST_DETAIL
        assert error.headers == {"Retry-After": "1"}
        assert status == LitAPIStatus.ERROR and buffer[uid].event.is_set()
    assert list(buffer["stream"].response_queue) == [buffer["stream"].response]
    assert buffer["done"].response == ("answer", LitAPIStatus.OK)
    for uid in ("b", "queued"):
        assert buffer[uid].response is None and not buffer[uid].event.is_set()


def test_a_notice_is_recognised_only_by_its_prefix_and_ordinary_lookups_still_work() -> None:
    server = _server()
    _submit(server, "x")
    assert server.response_buffer.get("x") is server.response_buffer["x"]
    assert server.response_buffer.get("missing", "default") == "default"
    assert server.response_buffer.get(f"{worker_loss._WORKER_LOST}x") is None
    assert server.response_buffer["x"].event.is_set()
    assert server.response_buffer.fail_lost(["x"]) == 0  # already answered


def test_nothing_held_sends_nothing() -> None:
    server = _server()
    assert announce_lost_requests(server, {}) == 0 and server._transport.sent == []
