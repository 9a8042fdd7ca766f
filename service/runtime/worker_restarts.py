"""Restarting a dead inference worker in place, within a budget of restarts over a time window.

A worker that dies (killed, out of memory, a crash in native code) is restarted the way LitServe's own
``restart_workers`` monitor does it (``launch_single_inference_worker``: same endpoint, same worker id, same
request queue; the HTTP processes and the port stay up). First the requests it had taken are answered 503
(``service.runtime.held_requests``, ``service.runtime.worker_loss``); requests still queued wait for the new worker.
``triage_worker_restarts_total`` counts the restarts. More than ``worker_restarts`` deaths within
``worker_restart_window`` seconds, or a restart that cannot be made, stop the service.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import time
from collections import deque
from dataclasses import dataclass

import litserve as ls

from service.metrics import forget_process, metrics
from service.runtime.held_requests import take_held
from service.runtime.internals import WorkerSetupStatus, setup_status_key
from service.runtime.worker_loss import announce_lost_requests
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One inference worker: the endpoint it serves and its LitServe worker id (its index within that endpoint)."""

    api: ls.LitAPI
    worker_id: int

    @property
    def status_key(self) -> str:
        return setup_status_key(self.api.api_path, self.worker_id)


class RestartBudget:
    """At most ``limit`` restarts within any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.times: deque[float] = deque()

    def take(self, now: float) -> bool:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def exit_reason(proc: mp.process.BaseProcess) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerRestarts:
    """Watches ``workers`` (replaced in place when restarted) for the supervisor's loop."""

    def __init__(self, server: ls.LitServer, workers: list[mp.Process], slots: list[Slot], settings: Settings) -> None:
        self.server, self.workers, self.slots = server, workers, slots
        self.budget = RestartBudget(settings.worker_restarts, settings.worker_restart_window)
        self.restarting: dict[int, float] = {}  # worker index -> when its death was noticed
        self._restarted_now: set[int] = set()

    def revive_dead(self) -> bool:
        """Restart every worker that has died; False when one more death is over budget or a restart failed (the
        service must stop)."""
        self._restarted_now = set()
        for index, proc in enumerate(self.workers):
            if not proc.is_alive() and not self._revive(index, proc):
                return False
        return True

    def note_ready(self, statuses: dict[str, str]) -> None:
        """Log each restarted worker that ``statuses`` (read before this round's restarts) shows ready again."""
        for index, since in list(self.restarting.items()):
            slot = self.slots[index]
            if index in self._restarted_now or statuses.get(slot.status_key) != WorkerSetupStatus.READY:
                continue
            del self.restarting[index]
            log.info(
                "inference worker %d of %s is ready again, %.2f s after it died",
                slot.worker_id,
                slot.api.api_path,
                time.monotonic() - since,
                extra={"api": slot.api.api_path, "pid": self.workers[index].pid},
            )

    def _revive(self, index: int, dead: mp.Process) -> bool:
        slot, now = self.slots[index], time.monotonic()
        if dead.pid is not None:
            forget_process(dead.pid)  # its triage_model sample no longer describes a running worker
        where = {"api": slot.api.api_path, "worker_id": slot.worker_id, "pid": dead.pid}
        if not self.budget.take(now):
            log.error(
                "inference worker %d of %s (pid %s) exited (%s); more than %d worker restarts within %g s; stopping",
                slot.worker_id,
                slot.api.api_path,
                dead.pid,
                exit_reason(dead),
                self.budget.limit,
                self.budget.window,
                extra=where,
            )
            return False
        try:
            held_dir = getattr(slot.api, "held_dir", None)
            if held_dir is not None and dead.pid is not None:
                announce_lost_requests(self.server, take_held(held_dir, dead.pid))
            self.workers[index] = self.server.launch_single_inference_worker(slot.api, slot.worker_id)
        except (EOFError, OSError) as exc:
            log.error("cannot restart inference worker %d of %s (%s); stopping", slot.worker_id, slot.api.api_path, exc)
            return False
        self.restarting[index] = now
        self._restarted_now.add(index)
        metrics().worker_restarts.labels(endpoint=slot.api.api_path).inc()
        log.error(
            "inference worker %d of %s (pid %s) exited (%s); restarted it as pid %s (%d of %d restarts within %g s)",
            slot.worker_id,
            slot.api.api_path,
            dead.pid,
            exit_reason(dead),
            self.workers[index].pid,
            len(self.budget.times),
            self.budget.limit,
            self.budget.window,
            extra=where,
        )
        return True
