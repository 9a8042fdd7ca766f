"""Running a LitServer's processes and stopping them cleanly on SIGTERM/SIGINT.

Out of the box LitServe's main process dies on SIGTERM and leaves its HTTP and inference processes behind. Here
the main process owns the lifecycle:

* start: bind the socket, start the queue manager and the inference workers, then the HTTP server processes
  right away, so ``/health`` answers 503 while the workers load the model and 200 once all are ready;
* run: until SIGTERM/SIGINT, or until a worker fails to load the model or any process dies (exit status 1);
* stop (at most ``drain_timeout`` + about 2 s in all, under 10 s): SIGTERM the HTTP servers, which stop
  accepting connections and finish the requests in flight (the workers and the queue manager are still up to
  answer them); then ask each inference worker to leave its loop (LitServe's stop sentinel), kill any that do not
  within a second, and shut the queue manager down.

A SIGTERM sent to the whole process group (systemd, a terminal's Ctrl-C) is safe too: the HTTP servers drain as
above, the workers ignore it (``EngineAPI.supervised``) and the queue manager, forked from this process, only
runs the handler below.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType

import litserve as ls
import uvicorn
from litserve.loops.base import _SENTINEL_VALUE as STOP_WORKER
from litserve.utils import WorkerSetupStatus

from service.engine_api import EngineAPI
from service.metrics import live_models
from service.settings import Settings

log = logging.getLogger(__name__)

_POLL_S = 0.1
_WORKER_EXIT_S = 1.0


def _watch(
    server: ls.LitServer, workers: Sequence[mp.Process], http: Sequence[mp.Process], stop: threading.Event
) -> int:
    started = time.monotonic()
    ready = False
    while not stop.wait(_POLL_S):
        try:
            statuses = dict(server.workers_setup_status)
        except (EOFError, OSError) as exc:
            log.error("lost the queue manager (%s); stopping", exc)
            return 1
        if WorkerSetupStatus.ERROR in statuses.values():
            log.error("an inference worker could not load the model (see its error above); stopping")
            return 1
        dead = [p for p in (*workers, *http) if not p.is_alive()]
        if dead:
            log.error("process %s (pid %s) exited with %s; stopping", dead[0].name, dead[0].pid, dead[0].exitcode)
            return 1
        if not ready and statuses and all(v == WorkerSetupStatus.READY for v in statuses.values()):
            ready = True
            models = live_models()
            log.info(
                "ready: %d inference worker(s) on %s",
                len(workers),
                ", ".join(sorted({m["provider"] for m in models})) or "unknown provider",
                extra={"workers": models, "startup_s": round(time.monotonic() - started, 2)},
            )
    log.info("stop requested; finishing requests in flight")
    return 0


def _stop(
    server: ls.LitServer, workers: Sequence[mp.Process], http: Sequence[mp.Process], drain_timeout: float
) -> None:
    started = time.monotonic()
    for proc in http:
        if proc.is_alive():
            proc.terminate()
    deadline = started + drain_timeout + 0.5
    for proc in http:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("HTTP server %s did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.join()
    drained = time.monotonic()
    try:
        for api in server.litapi_connector:
            queue = server.litapi_request_queues[api.api_path]
            for _ in server._inference_workers_config_for_api(api.api_path):
                queue.put(STOP_WORKER)
    except (EOFError, OSError) as exc:
        log.error("cannot ask the inference workers to stop (%s); killing them", exc)
    deadline = time.monotonic() + _WORKER_EXIT_S
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.warning("inference worker %s did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.join()
    log.info(
        "HTTP servers drained in %.2f s, inference workers stopped in %.2f s",
        drained - started,
        time.monotonic() - drained,
    )


def serve(server: ls.LitServer, settings: Settings) -> int:
    """Run ``server`` until SIGTERM/SIGINT (exit status 0) or a failure (1), then stop every process it started."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    for api in server.litapi_connector:
        if isinstance(api, EngineAPI):
            api.supervised = True
    server.uvicorn_graceful_timeout = settings.drain_timeout
    sockets: list[socket.socket] = []
    workers: list[mp.Process] = []
    http: list[mp.Process] = []
    manager = None
    try:
        config = uvicorn.Config(server.app, host=settings.host, port=settings.port, log_config=None)
        sockets.append(config.bind_socket())
        n_workers = sum(len(server._inference_workers_config_for_api(a.api_path)) for a in server.litapi_connector)
        manager = server._init_manager(n_workers)
        for api in server.litapi_connector:
            workers.extend(server.launch_inference_worker(api))
        server.inference_workers = workers
        http = list(
            server._start_server(
                settings.port, n_workers, settings.log_level, sockets, "process", log_config=None, access_log=False
            ).values()
        )
        # Only the HTTP processes may hold the listening socket: once they close it on SIGTERM, new connections
        # are refused instead of queueing on a socket nobody accepts from.
        for sock in sockets:
            sock.close()
        log.info("listening on %s:%d", settings.host, settings.port, extra={"http_processes": len(http)})
        return _watch(server, workers, http, stop)
    finally:
        if manager is not None:
            _stop(server, workers, http, settings.drain_timeout)
            manager.shutdown()
        for sock in sockets:
            sock.close()  # already closed unless starting the HTTP processes failed
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
