"""Contracts of the LitServe and uvicorn internals the service relies on (``service.runtime.internals``): one test
per internal, each checking that the name exists, has the signature the service calls it with, and does what the
service uses it for. An upgrade of either library that breaks one fails here, by name."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from importlib import metadata
from multiprocessing.managers import SyncManager
from pathlib import Path
from queue import Queue
from typing import Any

import litserve as ls
import pytest
from litserve.callbacks.base import CallbackRunner
from litserve.loops.loops import inference_worker
from litserve.server import response_queue_to_buffer
from uvicorn.config import Config
from uvicorn.server import ServerState

from service.runtime import internals
from service.runtime.internals import (
    STATUS_LINE,
    STOP_WORKER,
    WRITTEN_FOR,
    BatchedLoop,
    HttpToolsProtocol,
    LitAPIStatus,
    LoopResponseType,
    MessageTransport,
    ResponseBufferItem,
    StopLoop,
    WorkerSetupStatus,
)

LOCK = Path(__file__).resolve().parents[3] / "requirements" / "serving.lock"


class Echo(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def predict(self, x: object) -> object:
        return x


class FailingSetup(Echo):
    def setup(self, device: str) -> None:
        raise RuntimeError("no model")


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_installed_and_locked_versions_are_the_ones_the_internals_were_written_for() -> None:
    locked = dict(line.split("==") for line in LOCK.read_text().splitlines() if "==" in line and line[0] != "#")
    for name, version in WRITTEN_FOR.items():
        assert metadata.version(name) == version, f"{name} {metadata.version(name)}: re-check service.runtime.internals"
        assert locked[name] == version, f"requirements/serving.lock pins {name}=={locked[name]}, not {version}"


def test_stop_worker_and_stop_loop_end_litserves_batched_loop() -> None:
    """The supervisor queues ``STOP_WORKER``; LitServe's own batch collection raises ``StopLoop`` on it, and
    ``run_batched_loop`` returns when ``get_batch_requests`` raises it (as ``PatientBatchedLoop``'s does)."""
    api = Echo(max_batch_size=4, batch_timeout=0.01)
    queue: Queue = Queue()
    queue.put(STOP_WORKER)
    with pytest.raises(StopLoop):
        BatchedLoop().get_batch_requests(api, queue, None)

    calls: list[tuple[Any, ...]] = []

    class Stopping(BatchedLoop):
        def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Queue, transport: Any) -> Any:
            calls.append((lit_api, request_queue, transport))
            raise StopLoop()

    assert parameters(BatchedLoop.get_batch_requests) == ["self", "lit_api", "request_queue", "transport"]
    Stopping().run_batched_loop(api, queue, "transport", CallbackRunner())
    assert calls == [(api, queue, "transport")]


def test_message_transport_is_send_and_areceive() -> None:
    assert MessageTransport.__abstractmethods__ == {"send", "areceive"}
    assert parameters(MessageTransport.send) == ["self", "item", "consumer_id"]
    assert "consumer_id" in parameters(MessageTransport.areceive)
    assert "close" in vars(MessageTransport)


def test_an_http_process_looks_each_answer_up_in_its_response_buffer_with_get() -> None:
    """What ``worker_loss`` builds on: the reader calls ``areceive(consumer_id)``, unpacks
    ``(uid, (answer, status, response type, worker id))``, looks the uid up with ``get``, skips a ``None`` and fills
    the item's ``response`` and ``event``."""
    answer = ("answer", LitAPIStatus.OK)
    messages: deque[Any] = deque(
        [
            None,
            ("notice", (None, LitAPIStatus.ERROR, LoopResponseType.REGULAR, None)),
            ("u1", (*answer, LoopResponseType.REGULAR, 0)),
        ]
    )
    asked: list[Any] = []

    class Transport(MessageTransport):
        def send(self, item: Any, consumer_id: int) -> None:
            raise AssertionError("the reader only receives")

        async def areceive(self, *args: Any, **kwargs: Any) -> Any:
            asked.append((args, kwargs))
            if not messages:
                raise asyncio.CancelledError
            return messages.popleft()

    looked_up: list[str] = []

    class Buffer(dict[str, ResponseBufferItem]):
        def get(self, uid: str, default: Any = None) -> Any:
            looked_up.append(uid)
            return super().get(uid, default)

    async def read() -> ResponseBufferItem:
        item = ResponseBufferItem(event=asyncio.Event())
        buffer = Buffer(u1=item)
        await response_queue_to_buffer(Transport(), buffer, 3, ls.LitServer(Echo()).litapi_connector)
        return item

    item = asyncio.run(read())
    assert asked[0] == ((3,), {})
    assert looked_up == ["notice", "u1"]
    assert item.event.is_set() and tuple(item.response) == answer
    assert {"event", "response_queue", "response"} <= {f.name for f in ResponseBufferItem.__dataclass_fields__.values()}


@pytest.mark.parametrize(("api", "status"), [(FailingSetup, WorkerSetupStatus.ERROR), (Echo, WorkerSetupStatus.READY)])
def test_a_worker_reports_its_setup_under_setup_status_key(api: type[Echo], status: str) -> None:
    lit_api = api(api_path="/v1/route", max_batch_size=2, batch_timeout=0.01)
    ls.LitServer(lit_api, accelerator="cpu")  # completes the API's configuration, as the service's server does
    queue: Queue = Queue()
    queue.put(STOP_WORKER)  # a worker that sets up goes on to its loop: let that loop stop at once
    statuses = {"route_3": WorkerSetupStatus.STARTING}  # what launching the worker writes first
    inference_worker(lit_api, "cpu", 3, queue, None, statuses, CallbackRunner(), False)
    assert statuses == {internals.setup_status_key("/v1/route", 3): status} == {"route_3": status}
    assert {WorkerSetupStatus.STARTING, WorkerSetupStatus.READY, WorkerSetupStatus.ERROR} == {
        "starting",
        "ready",
        "error",
    }


def test_worker_count_is_litservers_workers_per_endpoint() -> None:
    server = ls.LitServer([Echo(api_path="/a"), Echo(api_path="/b")], accelerator="cpu", workers_per_device=3)
    assert internals.worker_count(server, "/a") == internals.worker_count(server, "/b") == 3


def test_init_manager_makes_the_queues_the_statuses_and_a_replaceable_transport() -> None:
    server = ls.LitServer([Echo(api_path="/a"), Echo(api_path="/b")], accelerator="cpu")
    manager = internals.init_manager(server, 2)
    try:
        assert isinstance(manager, SyncManager) and internals.manager_process(manager).is_alive()
        assert set(server.litapi_request_queues) == {"/a", "/b"}
        assert dict(server.workers_setup_status) == {}
        assert isinstance(internals.response_transport(server), MessageTransport)
        replacement = object()
        internals.replace_response_transport(server, replacement)  # type: ignore[arg-type]
        assert internals.response_transport(server) is replacement
    finally:
        manager.shutdown()


def test_litserver_starts_workers_and_http_processes_as_the_supervisor_calls_it() -> None:
    start = ls.LitServer._start_server
    assert parameters(start) == [
        "self",
        "port",
        "num_uvicorn_servers",
        "log_level",
        "sockets",
        "uvicorn_worker_type",
        "kwargs",
    ]
    assert inspect.signature(start).parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD
    assert parameters(ls.LitServer.launch_inference_worker) == ["self", "lit_api"]
    assert parameters(ls.LitServer.launch_single_inference_worker) == ["self", "lit_api", "worker_id"]
    server = ls.LitServer(Echo(), accelerator="cpu")
    for attribute in (
        "app",
        "litapi_connector",
        "litapi_request_queues",
        "response_buffer",
        "uvicorn_graceful_timeout",
    ):
        assert hasattr(server, attribute), attribute


def test_status_lines_are_complete_http_status_lines() -> None:
    for status, reason in ((400, b"Bad Request"), (408, b"Request Timeout"), (431, b"Request Header Fields Too Large")):
        assert STATUS_LINE[status] == b"HTTP/1.1 %d %s\r\n" % (status, reason)


def test_httptools_protocol_calls_the_hooks_the_bounded_head_protocol_extends() -> None:
    calls: list[str] = []
    hooks = ("on_message_begin", "on_url", "on_header", "on_headers_complete", "on_message_complete")

    class Recording(HttpToolsProtocol):
        pass

    for hook in hooks:
        original = getattr(HttpToolsProtocol, hook)

        def recorded(self: Any, *args: Any, _name: str = hook, _original: Any = original) -> None:
            calls.append(_name)
            _original(self, *args)

        setattr(Recording, hook, recorded)

    def refused(self: Any, msg: str) -> None:
        calls.append(f"400: {type(msg).__name__}")

    Recording.send_400_response = refused  # type: ignore[method-assign]

    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.written = b""

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 8000) if name in ("sockname", "peername") else default

        def write(self, data: bytes) -> None:
            self.written += data

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def exercise() -> None:
        loop = asyncio.get_running_loop()
        protocol = Recording(Config(app, lifespan="off"), ServerState(), {}, _loop=loop)
        assert protocol.loop is loop and protocol.cycle is None
        assert isinstance(protocol.server_state.default_headers, list)
        transport = Transport()
        protocol.connection_made(transport)
        assert protocol.transport is transport
        protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert protocol.cycle is not None and protocol.cycle.scope["path"] == "/x"
        await asyncio.sleep(0.05)
        assert protocol.cycle.response_complete
        protocol.data_received(b"NOT HTTP\r\n\r\n")
        protocol.connection_lost(None)

    asyncio.run(exercise())
    assert calls[: len(hooks)] == list(hooks) and calls[-1] == "400: str"
    for method in ("connection_made", "connection_lost", "data_received", "send_400_response", *hooks):
        assert callable(getattr(HttpToolsProtocol, method)), method
