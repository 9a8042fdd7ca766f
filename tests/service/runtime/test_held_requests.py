"""A worker's record of the requests it holds, as the supervisor reads it after the worker died."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path

from service.runtime.held_requests import HeldRequests, held_path, make_held_dir, read_held, take_held


def test_each_batch_replaces_the_last_and_a_longer_old_record_is_ignored(tmp_path: Path) -> None:
    held = HeldRequests(tmp_path)
    held.hold([(0, "a" * 36), (1, "b" * 36), (2, "c" * 36)])
    held.hold([(1, "d" * 36)])
    assert read_held(tmp_path, os.getpid()) == {1: ["d" * 36]}
    assert take_held(tmp_path, os.getpid()) == {1: ["d" * 36]}
    assert not held_path(tmp_path, os.getpid()).exists() and take_held(tmp_path, os.getpid()) == {}
    held.close()


def test_close_removes_the_file(tmp_path: Path) -> None:
    held = HeldRequests(tmp_path)
    held.hold([(0, "x")])
    held.close()
    assert list(tmp_path.iterdir()) == []


def _hold_and_die(directory: Path, ready: mp.synchronize.Event) -> None:  # in a child process
    HeldRequests(directory).hold([(0, "first"), (3, "second"), (0, "third")])
    ready.set()
    signal.pause()


def test_a_killed_workers_record_survives_it(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    worker = ctx.Process(target=_hold_and_die, args=(tmp_path, ready))
    worker.start()
    try:
        assert ready.wait(120)
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # it would wait for a signal forever
        worker.join()
    assert take_held(tmp_path, worker.pid) == {0: ["first", "third"], 3: ["second"]}
    assert list(tmp_path.iterdir()) == []


def test_the_directory_is_private_and_in_shared_memory_where_there_is_one() -> None:
    directory = make_held_dir()
    try:
        assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o700
        if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
            assert directory.parent == Path("/dev/shm")
    finally:
        directory.rmdir()


def test_held_request_folders_of_dead_services_are_swept(tmp_path: Path, dead_pid: int) -> None:
    from service.runtime.held_requests import HELD_PREFIX, sweep_orphan_held_dirs

    alive = os.getpid()
    for pid in (dead_pid, alive):
        (tmp_path / f"{HELD_PREFIX}{pid}-x1y2").mkdir()
        (tmp_path / f"{HELD_PREFIX}{pid}-x1y2" / "worker-1").write_text(".\n")
    assert sweep_orphan_held_dirs(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{HELD_PREFIX}{alive}-x1y2"]
