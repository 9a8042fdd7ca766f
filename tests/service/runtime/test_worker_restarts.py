"""WorkerRestarts: a dead worker is replaced in place and its held requests are announced, within a budget."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from service.runtime.held_requests import HeldRequests, held_path
from service.runtime.internals import WorkerSetupStatus
from service.runtime.worker_restarts import RestartBudget, Slot, WorkerRestarts, exit_reason
from service.settings import Settings


class FakeProcess:
    def __init__(self, pid: int, alive: bool = True, exitcode: int | None = None) -> None:
        self.pid, self.alive, self.exitcode = pid, alive, exitcode

    def is_alive(self) -> bool:
        return self.alive


class FakeServer:
    def __init__(self) -> None:
        self.launched: list[tuple[str, int]] = []
        self._transport = SimpleNamespace(sent=[])
        self._transport.send = lambda item, consumer: self._transport.sent.append((item, consumer))

    def launch_single_inference_worker(self, api: Any, worker_id: int) -> FakeProcess:
        self.launched.append((api.api_path, worker_id))
        return FakeProcess(1000 + len(self.launched))


def restarts(tmp_path: Path, limit: int = 2) -> tuple[WorkerRestarts, FakeServer, list[FakeProcess]]:
    api = SimpleNamespace(api_path="/v1/route", held_dir=tmp_path)
    server, workers = FakeServer(), [FakeProcess(11), FakeProcess(12)]
    settings = Settings(worker_restarts=limit, worker_restart_window=60)
    return WorkerRestarts(server, workers, [Slot(api, 0), Slot(api, 1)], settings), server, workers


def test_a_dead_worker_is_replaced_in_place_and_its_held_requests_announced(tmp_path: Path, metrics_dir: Path) -> None:
    watcher, server, workers = restarts(tmp_path)
    record = HeldRequests(tmp_path)
    record.path = held_path(tmp_path, 12)  # as if written by worker 12
    record.hold([(0, "uid-a"), (2, "uid-b")])
    workers[1].alive, workers[1].exitcode = False, -signal.SIGKILL
    assert watcher.revive_dead()
    assert server.launched == [("/v1/route", 1)]
    assert workers[1].pid == 1001 and workers[0].pid == 11  # replaced in the supervisor's own list
    assert sorted(consumer for _, consumer in server._transport.sent) == [0, 2]
    assert not held_path(tmp_path, 12).exists()
    assert list(watcher.restarting) == [1]
    watcher.note_ready({"route_1": WorkerSetupStatus.READY})  # read before this round's restart: not yet
    assert list(watcher.restarting) == [1]
    assert watcher.revive_dead()  # nothing dead this round
    watcher.note_ready({"route_1": WorkerSetupStatus.STARTING})
    assert list(watcher.restarting) == [1]
    watcher.note_ready({"route_1": WorkerSetupStatus.READY})
    assert watcher.restarting == {}


def test_one_death_more_than_the_budget_stops_the_service(tmp_path: Path, metrics_dir: Path) -> None:
    watcher, server, workers = restarts(tmp_path, limit=1)
    workers[0].alive = False
    assert watcher.revive_dead()
    workers[0].alive = False  # the new worker dies too
    assert not watcher.revive_dead()
    assert len(server.launched) == 1


def test_restart_budget_forgets_restarts_older_than_its_window() -> None:
    budget = RestartBudget(limit=2, window=10)
    assert budget.take(0) and budget.take(5)
    assert not budget.take(9)
    assert budget.take(10.5)  # the one at 0 has left the window


@pytest.mark.parametrize(
    ("exitcode", "reason"), [(-signal.SIGKILL, "killed by SIGKILL"), (1, "exit status 1"), (-99, "killed by signal 99")]
)
def test_exit_reason_names_the_signal(exitcode: int, reason: str) -> None:
    assert exit_reason(FakeProcess(1, alive=False, exitcode=exitcode)) == reason
