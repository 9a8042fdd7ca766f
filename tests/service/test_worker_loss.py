"""The HTTP process's response buffer answers a dead worker's requests, and only those, with 503."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from types import SimpleNamespace
from typing import Any

from fastapi import HTTPException
from litserve.utils import LitAPIStatus, ResponseBufferItem

from service import worker_loss
from service.worker_loss import WORKER_LOST_DETAIL, announce_lost_worker, track_endpoints


class _Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []

    def send(self, item: Any, consumer_id: int) -> None:
        self.sent.append((item, consumer_id))


def _server() -> SimpleNamespace:
    return SimpleNamespace(_get_request_queue=lambda api_path: f"queue of {api_path}", _transport=_Transport())


def _submit(server: SimpleNamespace, uid: str, api_path: str, worker_id: int | None, stream: bool = False) -> None:
    """What LitServe does for a request, in its own task's context: look its endpoint's queue up, buffer it, then
    learn which worker took it."""

    def submit() -> None:
        server._get_request_queue(api_path)
        server.response_buffer[uid] = ResponseBufferItem(asyncio.Event(), deque() if stream else None)

    contextvars.copy_context().run(submit)
    server.response_buffer[uid].worker_id = worker_id


def _notice_uid(server: SimpleNamespace, index: int = 0) -> str:
    return server._transport.sent[index][0][0]


def test_only_the_dead_workers_requests_of_its_endpoint_get_503() -> None:
    server = _server()
    track_endpoints(server)
    assert contextvars.copy_context().run(server._get_request_queue, "/v1/route") == "queue of /v1/route"
    _submit(server, "a", "/v1/route", 0)
    _submit(server, "b", "/v1/route", 1)  # another worker of the same endpoint
    _submit(server, "c", "/v1/explain", 0)  # the same worker id on another endpoint
    _submit(server, "d", "/v1/route", None)  # still queued: no worker has taken it
    _submit(server, "e", "/v1/route", 0, stream=True)
    server.response_buffer["f"] = ResponseBufferItem(asyncio.Event())  # submitted without the tracked lookup
    server.response_buffer["f"].worker_id = 0

    announce_lost_worker(server, "/v1/route", 0, n_http=3)
    assert [consumer for _, consumer in server._transport.sent] == [0, 1, 2]
    assert server.response_buffer.get(_notice_uid(server)) is None  # LitServe's reader then skips the notice

    buffer = server.response_buffer
    for uid in ("a", "e"):
        error, status = buffer[uid].response
        assert isinstance(error, HTTPException) and error.status_code == 503 and error.detail == WORKER_LOST_DETAIL
        assert status == LitAPIStatus.ERROR and buffer[uid].event.is_set()
    assert list(buffer["e"].response_queue) == [buffer["e"].response]
    for uid in ("b", "c", "d", "f"):
        assert buffer[uid].response is None and not buffer[uid].event.is_set()


def test_an_answered_request_is_left_alone_and_popped_requests_are_forgotten() -> None:
    server = _server()
    track_endpoints(server)
    _submit(server, "done", "/v1/route", 0)
    server.response_buffer["done"].response = ("answer", LitAPIStatus.OK)
    server.response_buffer["done"].event.set()
    _submit(server, "gone", "/v1/route", 0)
    assert server.response_buffer.pop("gone").worker_id == 0
    assert "gone" not in server.response_buffer.endpoint_of
    assert server.response_buffer.pop("never", None) is None

    assert server.response_buffer.fail_lost("/v1/route", 0) == 0
    assert server.response_buffer["done"].response == ("answer", LitAPIStatus.OK)


def test_the_notice_names_endpoint_and_worker_even_with_a_hash_in_the_path() -> None:
    server = _server()
    announce_lost_worker(server, "/v1/odd#path", 7, n_http=1)
    uid = _notice_uid(server)
    assert uid.startswith(worker_loss._WORKER_LOST)
    track_endpoints(server)
    _submit(server, "x", "/v1/odd#path", 7)
    assert server.response_buffer.get(uid) is None
    assert server.response_buffer["x"].event.is_set()
