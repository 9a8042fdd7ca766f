"""The one door to LitServe's and uvicorn's internals: every name of theirs the service relies on beyond their
documented API.

Neither project promises these; they are what the runtime builds on to replace LitServe's queues, batching loop,
worker monitor and HTTP server start (see docs/ARCHITECTURE.md). They were written against the versions in
``WRITTEN_FOR``, which is also what ``requirements/serving.lock`` pins; tests/service/runtime/test_internals.py
checks each name here (it exists, has the signature and does what the service uses it for), so an upgrade that
changes one fails that test by name, not the service at run time. Nothing else in the project imports from
``litserve.loops``, ``litserve.transport``, ``litserve.utils`` or ``uvicorn.protocols``, or calls a private
``LitServer`` method.
"""

from __future__ import annotations

from collections.abc import Sequence
from multiprocessing.managers import SyncManager
from multiprocessing.process import BaseProcess
from socket import socket
from typing import Any

import litserve as ls
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, LoopResponseType, ResponseBufferItem, WorkerSetupStatus
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

WRITTEN_FOR = {"litserve": "0.2.19", "uvicorn": "0.54.0"}

# --- the inference worker's loop -------------------------------------------------------------------------------
# ``BatchedLoop.run_batched_loop`` calls ``get_batch_requests(lit_api, request_queue, transport)`` for each batch
# and returns when it raises ``StopLoop``; the supervisor asks a worker to stop by queueing ``STOP_WORKER``.
STOP_WORKER = _SENTINEL_VALUE
StopLoop = _StopLoopError

# --- answers on their way back to the HTTP processes ------------------------------------------------------------
# ``MessageTransport``: what a worker sends answers through (``send(item, consumer_id)``) and an HTTP process reads
# them from (``await areceive(consumer_id)``). The HTTP process's reader looks each answer's uid up in its response
# buffer (a dict of ``ResponseBufferItem``) with ``get`` and fills the item's ``response`` with
# ``(answer, LitAPIStatus, ...)``; a message is ``(uid, (answer, status, LoopResponseType, worker_id))``.

# --- worker setup status -----------------------------------------------------------------------------------------
# ``LitServer.workers_setup_status`` (a manager dict) maps ``setup_status_key`` to a ``WorkerSetupStatus`` value.


def setup_status_key(api_path: str, worker_id: int) -> str:
    """The key LitServe's inference worker ``worker_id`` of endpoint ``api_path`` writes its setup status under."""
    return f"{api_path.split('/')[-1]}_{worker_id}"


# --- uvicorn's HTTP/1.1 protocol --------------------------------------------------------------------------------
# ``service.http.protocol`` subclasses ``HttpToolsProtocol``: it extends ``connection_made``, ``connection_lost``,
# ``data_received``, the parser callbacks ``on_message_begin``, ``on_url``, ``on_header``, ``on_headers_complete``,
# ``on_message_complete`` and replaces ``send_400_response``; it reads ``loop``, ``transport``, ``cycle`` (its
# ``response_complete`` and ``scope``) and ``server_state.default_headers``, and writes status lines from
# ``STATUS_LINE``.

# --- LitServer's private methods and attributes ----------------------------------------------------------------


def worker_count(server: ls.LitServer, api_path: str) -> int:
    """How many inference workers LitServe would start for the endpoint ``api_path``."""
    return len(server._inference_workers_config_for_api(api_path))


def init_manager(server: ls.LitServer, consumers: int) -> SyncManager:
    """Start LitServe's queue manager for ``consumers`` HTTP processes; it makes ``server.litapi_request_queues``,
    ``server.workers_setup_status`` and the response transport."""
    return server._init_manager(consumers)


def manager_process(manager: SyncManager) -> BaseProcess:
    """The queue manager's process (multiprocessing keeps it private)."""
    return manager._process


def response_transport(server: ls.LitServer) -> MessageTransport:
    """The transport the workers send answers through."""
    return server._transport


def replace_response_transport(server: ls.LitServer, transport: MessageTransport) -> None:
    """Use ``transport`` instead of the one ``init_manager`` made (before any worker or HTTP process starts)."""
    server._transport = transport


def start_http_processes(
    server: ls.LitServer, port: int, count: int, log_level: str, sockets: Sequence[socket], **uvicorn_config: Any
) -> dict[str, BaseProcess]:
    """Start ``count`` uvicorn HTTP processes serving ``server.app`` on ``sockets``; ``uvicorn_config`` goes to
    ``uvicorn.Config``."""
    return server._start_server(port, count, log_level, list(sockets), "process", **uvicorn_config)


__all__ = [
    "STATUS_LINE",
    "STOP_WORKER",
    "WRITTEN_FOR",
    "BatchedLoop",
    "HttpToolsProtocol",
    "LitAPIStatus",
    "LoopResponseType",
    "MessageTransport",
    "ResponseBufferItem",
    "StopLoop",
    "WorkerSetupStatus",
    "init_manager",
    "manager_process",
    "replace_response_transport",
    "response_transport",
    "setup_status_key",
    "start_http_processes",
    "worker_count",
]
