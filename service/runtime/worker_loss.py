"""How an HTTP process learns that the inference worker holding some of its requests died.

Each inference worker records the requests it has taken (``service.runtime.held_requests``). When one dies, the
supervisor reads its record and sends each HTTP process that had requests there a notice on the response queue that
process already reads (``announce_lost_requests``). LitServe's reader of that queue looks every uid up in the process's
response buffer with ``get``; the buffer is an ``_InFlight`` (``install_in_flight``, before the HTTP processes
fork), which answers the notice's requests 503 and returns None, so the reader skips the notice.

(LitServe's own monitor fails a dead worker's requests in the main process's response buffer, which is empty when
the HTTP servers are processes of their own, and matches them by worker id alone, which the first worker of every
endpoint shares.)
"""

from __future__ import annotations

import logging
from typing import Any

import litserve as ls
from fastapi import HTTPException

from service.runtime.internals import LitAPIStatus, LoopResponseType, ResponseBufferItem, response_transport

log = logging.getLogger(__name__)

# A message on an HTTP process's response queue whose uid starts with this says "the requests <uid>,<uid>,... were
# held by an inference worker that died".
_WORKER_LOST = "triage-worker-lost:"
WORKER_LOST_DETAIL = "the inference worker handling this request stopped unexpectedly and is being restarted; retry"


class _InFlight(dict[str, ResponseBufferItem]):
    """LitServe's response buffer of one HTTP process, which also understands the supervisor's lost-requests
    notices."""

    def get(self, uid: str, default: Any = None) -> Any:
        if isinstance(uid, str) and uid.startswith(_WORKER_LOST):
            self.fail_lost(uid.removeprefix(_WORKER_LOST).split(","))
            return None
        return super().get(uid, default)

    def fail_lost(self, uids: list[str]) -> int:
        """Answer each of ``uids`` still waiting for its answer with a 503; returns how many."""
        failed = 0
        for uid in uids:
            item = super().get(uid)
            if item is None or item.event.is_set():
                continue  # answered before the worker died, or not this process's request
            error = HTTPException(503, WORKER_LOST_DETAIL, headers={"Retry-After": "1"})
            item.response = (error, LitAPIStatus.ERROR)
            if item.response_queue is not None:
                item.response_queue.append((error, LitAPIStatus.ERROR))
            item.event.set()
            failed += 1
        if failed:
            log.warning("answered %d request(s) of a dead inference worker with 503", failed)
        return failed


def install_in_flight(server: ls.LitServer) -> None:
    """Give the HTTP processes, forked after this, a response buffer that understands lost-requests notices."""
    server.response_buffer = _InFlight()


def announce_lost_requests(server: ls.LitServer, held: dict[int, list[str]]) -> int:
    """Tell each HTTP process (by its response queue id) which of its requests a dead worker held; returns how
    many requests were named."""
    for consumer_id, uids in held.items():
        notice = (f"{_WORKER_LOST}{','.join(uids)}", (None, LitAPIStatus.ERROR, LoopResponseType.REGULAR, None))
        response_transport(server).send(notice, consumer_id)
    return sum(len(uids) for uids in held.values())
