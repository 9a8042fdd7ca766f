"""Running a LitServer's processes, restarting a dead inference worker, and stopping cleanly on SIGTERM/SIGINT.

Out of the box LitServe's main process dies on SIGTERM and leaves its HTTP and inference processes behind. Here
the main process owns the lifecycle:

* start: the queue manager (its queues replaced by packet pipes by default, ``service.runtime.packet_pipes``) and the
  inference workers, then bind the socket (so only the HTTP processes ever hold it, and connections are refused,
  not left unanswered, once they close it) and start the HTTP server processes right away, so ``/health`` answers
  503 while the workers load the model and 200 once all are ready;
* run: until SIGTERM/SIGINT (exit status 0), or until a failure (exit status 1): a worker fails to load the model,
  an HTTP server process or the queue manager dies, or inference workers die more than ``worker_restarts`` times
  within ``worker_restart_window`` seconds;
* a dead inference worker is restarted in place (``service.runtime.worker_restarts``): the requests it had taken are
  answered 503 at once, requests still queued wait for the new worker, and ``/health`` answers 503 until it has
  loaded and warmed up the model;
* stop (at most ``drain_timeout`` + about 2 s in all, under 10 s): SIGTERM the HTTP servers, which stop
  accepting connections and finish the requests in flight (the workers and the queue manager are still up to
  answer them); then ask each inference worker to leave its loop (LitServe's stop sentinel), kill any that do not
  within a second, and shut the queue manager down.

A SIGTERM sent to the whole process group (systemd, a terminal's Ctrl-C) is safe too: the HTTP servers drain as
above, the workers ignore it (``EngineAPI.supervised``) and the queue manager, forked from this process, only
runs the handler below.

Why not LitServe's monitor as it is: it is started by ``LitServer.run`` (which this module replaces), and it fails
the dead worker's requests in the main process's response buffer, which is empty when the HTTP servers are
processes of their own (each has its copy); it also matches them by worker id alone, which every endpoint's first
worker shares. So the supervisor restarts the worker itself and tells each HTTP process which of its requests the
dead worker held, through the response queue the HTTP process already reads (``service.runtime.worker_loss``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import litserve as ls
import uvicorn

from service.http.protocol import bounded_head_protocol
from service.inference.engine_api import EngineAPI
from service.metrics import live_models, metrics
from service.runtime.held_requests import make_held_dir, sweep_orphan_held_dirs
from service.runtime.internals import (
    STOP_WORKER,
    WorkerSetupStatus,
    init_manager,
    manager_process,
    response_transport,
    start_http_processes,
    worker_count,
)
from service.runtime.packet_pipes import RequestQueueFull, use_packet_pipes
from service.runtime.parent_death import forked_children_die_with_this_process
from service.runtime.photo_handoff import sweep, sweep_orphans
from service.runtime.worker_loss import install_in_flight
from service.runtime.worker_restarts import Slot, WorkerRestarts
from service.settings import Settings

log = logging.getLogger(__name__)

_POLL_S = 0.1
_WORKER_EXIT_S = 1.0


def _watch(
    server: ls.LitServer,
    manager: mp.process.BaseProcess,
    restarts: WorkerRestarts,
    http: Sequence[mp.Process],
    stop: threading.Event,
) -> int:
    started = time.monotonic()
    ready = False
    statuses: dict[str, str] = {}
    while not stop.wait(_POLL_S):
        # The workers' setup status lives in the queue manager: reading it costs a round trip per worker, so it is
        # read only while some worker is loading the model (at start and after a restart).
        if not ready or restarts.restarting:
            try:
                statuses = dict(server.workers_setup_status)
            except (EOFError, OSError) as exc:
                log.error("lost the queue manager (%s); stopping", exc)
                return 1
        elif not manager.is_alive():
            log.error("lost the queue manager (its process exited); stopping")
            return 1
        if WorkerSetupStatus.ERROR in statuses.values():
            log.error("an inference worker could not load the model (see its error above); stopping")
            return 1
        dead_http = [p for p in http if not p.is_alive()]
        if dead_http:
            proc = dead_http[0]
            log.error("HTTP server process %s (pid %s) exited with %s; stopping", proc.name, proc.pid, proc.exitcode)
            return 1
        if not restarts.revive_dead():
            return 1
        restarts.note_ready(statuses)
        if not ready and statuses and all(v == WorkerSetupStatus.READY for v in statuses.values()):
            ready = True
            models = live_models()
            log.info(
                "ready: %d inference worker(s) on %s",
                len(restarts.workers),
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
            for _ in range(worker_count(server, api.api_path)):
                queue.put(STOP_WORKER)
    except (EOFError, OSError, RequestQueueFull) as exc:
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


def _private_dir() -> Path | None:
    """Where the workers record the requests they hold and the processes leave messages too large for a packet."""
    try:
        return make_held_dir()
    except OSError as exc:
        log.warning(
            "no writable private directory (%s): requests and answers go through LitServe's queue manager, and the "
            "requests of a worker that dies are answered when they time out",
            exc,
        )
        return None


def serve(server: ls.LitServer, settings: Settings) -> int:
    """Run ``server`` until SIGTERM/SIGINT (exit status 0) or a failure (1), then stop every process it started."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    forked_children_die_with_this_process()
    for api in server.litapi_connector:
        if isinstance(api, EngineAPI):
            api.supervised = True
            api.supervisor_pid = os.getpid()
    server.uvicorn_graceful_timeout = settings.drain_timeout
    orphans = sweep_orphan_held_dirs() + sweep_orphans(settings.handoff_dir)
    if orphans:
        log.warning("removed %d files and folders left by services that were killed outright", orphans)
    private_dir = _private_dir()
    if settings.worker_restarts > 0:
        install_in_flight(server)
        for api in server.litapi_connector:
            if isinstance(api, EngineAPI):
                api.held_dir = private_dir  # None: workers keep no record
    sockets: list[socket.socket] = []
    workers: list[mp.Process] = []
    slots: list[Slot] = []
    http: list[mp.Process] = []
    manager = None
    try:
        n_workers = sum(worker_count(server, a.api_path) for a in server.litapi_connector)
        manager = init_manager(server, n_workers)
        if settings.packet_pipes and private_dir is not None:
            use_packet_pipes(server, private_dir, consumers=n_workers)
        log.info("requests and answers through %s", type(response_transport(server)).__name__)
        for api in server.litapi_connector:
            launched = server.launch_inference_worker(api)
            workers.extend(launched)
            slots.extend(Slot(api, worker_id) for worker_id in range(len(launched)))
        server.inference_workers = workers
        # Bound only now, so that the queue manager and the inference workers (forked above) never hold it.
        config = uvicorn.Config(server.app, host=settings.host, port=settings.port, log_config=None)
        sockets.append(config.bind_socket())
        http = list(
            start_http_processes(
                server,
                settings.port,
                n_workers,
                settings.log_level,
                sockets,
                log_config=None,
                access_log=False,
                http=bounded_head_protocol(head_timeout=settings.request_timeout),
            ).values()
        )
        # Only the HTTP processes may hold the listening socket: once they close it on SIGTERM, new connections
        # are refused instead of queueing on a socket nobody accepts from.
        for sock in sockets:
            sock.close()
        for api in server.litapi_connector:
            metrics().worker_restarts.labels(endpoint=api.api_path)  # exported as 0 until a restart
        log.info("listening on %s:%d", settings.host, settings.port, extra={"http_processes": len(http)})
        return _watch(server, manager_process(manager), WorkerRestarts(server, workers, slots, settings), http, stop)
    finally:
        if manager is not None:
            _stop(server, workers, http, settings.drain_timeout)
            # What an HTTP process killed mid-request left in the hand-off directory (the others removed theirs).
            sweep(settings.handoff_dir, [proc.pid for proc in http if proc.pid is not None])
            manager.shutdown()
        for sock in sockets:
            sock.close()  # already closed unless starting the HTTP processes failed
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
