"""How an HTTP process learns that the inference worker holding some of its requests died.

An inference worker tells the HTTP process which worker took a request (LitServe's START message, sent when
``restart_workers`` is on), but worker ids restart at 0 for every endpoint, and LitServe's own monitor fails a dead
worker's requests in the main process's response buffer, which is empty when the HTTP servers are processes of
their own. So each HTTP process keeps its response buffer as an ``_InFlight``, which also records each request's
endpoint (``track_endpoints``, installed before the HTTP processes fork), and the supervisor announces a death on
every HTTP process's response queue (``announce_lost_worker``); the buffer answers that worker's requests 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import litserve as ls
from fastapi import HTTPException
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem

log = logging.getLogger(__name__)

# A message on an HTTP process's response queue whose uid starts with this says "the inference worker
# <worker id> of <api path> died": ``_WORKER_LOST + f"{api_path}#{worker_id}"``.
_WORKER_LOST = "triage-worker-lost:"
WORKER_LOST_DETAIL = "the inference worker handling this request stopped unexpectedly and is being restarted; retry"

# The endpoint a request is being submitted to, set by ``track_endpoints``'s request-queue lookup, which LitServe
# makes in the same task just before it puts the request in the response buffer.
_submitting_to: ContextVar[str | None] = ContextVar("triage_submitting_to", default=None)


class _InFlight(dict[str, ResponseBufferItem]):
    """LitServe's response buffer of one HTTP process, which also knows each request's endpoint.

    An inference worker tells the HTTP process which worker took a request (LitServe's START message, sent when
    ``restart_workers`` is on, sets ``ResponseBufferItem.worker_id``), but worker ids restart at 0 for every
    endpoint. The supervisor's ``_WORKER_LOST`` notice arrives through LitServe's reader of the response queue,
    which looks every uid up with ``get``: here that answers the lost requests of that endpoint's worker with a 503
    and returns None, so the reader skips the notice.
    """

    def __init__(self) -> None:
        super().__init__()
        self.endpoint_of: dict[str, str | None] = {}

    def __setitem__(self, uid: str, item: ResponseBufferItem) -> None:
        self.endpoint_of[uid] = _submitting_to.get()
        super().__setitem__(uid, item)

    def pop(self, uid: str, *default: Any) -> Any:
        self.endpoint_of.pop(uid, None)
        return super().pop(uid, *default)

    def get(self, uid: str, default: Any = None) -> Any:
        if isinstance(uid, str) and uid.startswith(_WORKER_LOST):
            api_path, _, worker_id = uid.removeprefix(_WORKER_LOST).rpartition("#")
            self.fail_lost(api_path, int(worker_id))
            return None
        return super().get(uid, default)

    def fail_lost(self, api_path: str, worker_id: int) -> int:
        """Answer every request the dead worker had taken with a 503; returns how many."""
        failed = 0
        for uid, item in list(self.items()):
            if item.worker_id != worker_id or self.endpoint_of.get(uid) != api_path or item.event.is_set():
                continue
            error = HTTPException(503, WORKER_LOST_DETAIL)
            item.response = (error, LitAPIStatus.ERROR)
            if item.response_queue is not None:
                item.response_queue.append((error, LitAPIStatus.ERROR))
            item.event.set()
            failed += 1
        if failed:
            log.warning("answered %d request(s) of a dead inference worker with 503", failed, extra={"api": api_path})
        return failed


def track_endpoints(server: ls.LitServer) -> None:
    """Make the HTTP processes, forked after this, record the endpoint of each request they submit."""
    server.response_buffer = _InFlight()
    lookup: Callable[[str], Any] = server._get_request_queue

    def request_queue(api_path: str) -> Any:
        _submitting_to.set(api_path)
        return lookup(api_path)

    server._get_request_queue = request_queue  # type: ignore[method-assign]


def announce_lost_worker(server: ls.LitServer, api_path: str, worker_id: int, n_http: int) -> None:
    """Tell each of the ``n_http`` HTTP processes that inference worker ``worker_id`` of ``api_path`` died."""
    notice = (
        f"{_WORKER_LOST}{api_path}#{worker_id}",
        (None, LitAPIStatus.ERROR, LoopResponseType.REGULAR, worker_id),
    )
    for consumer_id in range(n_http):
        server._transport.send(notice, consumer_id)
