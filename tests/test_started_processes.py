"""The process groups the tests start and the end-of-session check (``tests/started_processes.py``): a group is
stopped whatever state it is in, and a run that leaves a group alive, or a temporary folder of the tests' services
behind, fails even when every test passed. The check runs here in a pytest of its own, so that what it catches is
not this run's failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import started_processes
from tests.started_processes import (
    HELD_PREFIX,
    METRICS_DIR_PREFIX,
    PHOTO_PREFIX,
    Registry,
    group_members,
    owner_pid,
    spawn_group,
    stop_group,
    temp_entries,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_prefixes_are_the_services_own() -> None:
    from service.metrics import METRICS_DIR_PREFIX as metrics
    from service.runtime.held_requests import HELD_PREFIX as held
    from service.runtime.photo_handoff import PREFIX as photo

    assert (held, metrics, photo) == (HELD_PREFIX, METRICS_DIR_PREFIX, PHOTO_PREFIX)


def test_owner_pid_reads_the_id_a_service_puts_in_a_name() -> None:
    assert owner_pid(f"{HELD_PREFIX}4321-abcd") == 4321
    assert owner_pid(f"{METRICS_DIR_PREFIX}17-x") == 17
    assert owner_pid(f"{PHOTO_PREFIX}99-0f0f") == 99
    assert owner_pid(f"{HELD_PREFIX}notapid-1") is None
    assert owner_pid("triage-other-12-x") is None


def test_a_leader_that_ignores_sigterm_is_killed_with_its_group() -> None:
    proc = spawn_group(["sh", "-c", "trap '' TERM; sleep 600 & wait"], "ignores SIGTERM")
    problem = stop_group(proc, grace_s=1.0)
    assert problem is not None and "did not exit within 1 s of SIGTERM" in problem
    assert group_members(proc.pid) == {}


def test_children_a_leader_left_behind_are_killed() -> None:
    proc = spawn_group(["sh", "-c", "sleep 600 & echo started"], "leaves a child", stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    proc.wait()
    assert group_members(proc.pid), "the child should still be running"
    problem = stop_group(proc, orphans_s=0.5)
    assert problem is not None and "exited leaving" in problem
    assert group_members(proc.pid) == {}


def test_a_group_that_stops_on_sigterm_is_no_problem() -> None:
    proc = spawn_group(["sleep", "600"], "stops on SIGTERM")
    assert stop_group(proc) is None
    assert proc.returncode == -signal.SIGTERM and group_members(proc.pid) == {}


def test_the_folders_of_a_leader_killed_by_a_signal_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sleep`` dies of SIGTERM, as the service does before its handlers are set: nothing of its own cleaned up."""
    monkeypatch.setattr(started_processes, "temp_bases", lambda: [tmp_path])
    proc = spawn_group(["sleep", "600"], "dies of SIGTERM")
    (tmp_path / f"{METRICS_DIR_PREFIX}{proc.pid}-abc").mkdir()
    assert stop_group(proc) is None
    assert list(tmp_path.iterdir()) == []


def test_the_folders_of_a_leader_that_exits_on_sigterm_are_its_own_business(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader that handles SIGTERM and exits 0 was able to clean up: what it left is for the session check."""
    monkeypatch.setattr(started_processes, "temp_bases", lambda: [tmp_path])
    proc = spawn_group(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"], "exits 0 on SIGTERM")
    left = tmp_path / f"{HELD_PREFIX}{proc.pid}-abc"
    left.mkdir()
    assert stop_group(proc) is None and proc.returncode == 0
    assert left.is_dir()


INNER = """
import os
from pathlib import Path

from tests.started_processes import spawn_group, stop_group

TMP = Path(os.environ["TMPDIR"])


def test_leaves_a_process_running():
    proc = spawn_group(["sleep", "600"], "left running on purpose")
    (TMP / "left.pid").write_text(str(proc.pid))


SERVER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]  # exits 0 on SIGTERM, as the service does


def test_leaves_a_folder_named_after_its_server():
    proc = spawn_group(SERVER, "stopped, but its folder stays")
    (TMP / "triage-held-{}-abc".format(proc.pid)).mkdir()
    assert stop_group(proc) is None


def test_leaves_a_folder_named_after_this_process():
    (TMP / "triage-photo-{}-0123".format(os.getpid())).write_bytes(b"photo")


def test_cleans_up():
    proc = spawn_group(SERVER, "stopped")
    folder = TMP / "triage-metrics-{}-def".format(proc.pid)
    folder.mkdir()
    assert stop_group(proc) is None
    folder.rmdir()


def test_leaves_a_folder_of_someone_else():
    (TMP / "triage-held-1-other").mkdir()
"""


def run_inner(tmp_path: Path, *select: str) -> subprocess.CompletedProcess[str]:
    """pytest with the plugin on the tests ``select`` of ``INNER``, its temporary directory ``tmp_path / "tmp"``."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    names = " or ".join(select)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "tests.started_processes", "-p", "no:cacheprovider"]
    argv += ["--rootdir", str(tmp_path), "-k", names, str(tmp_path / "test_inner.py")]
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_process_group_left_running_fails_the_run_and_is_killed(tmp_path: Path) -> None:
    done = run_inner(tmp_path, "test_leaves_a_process_running")
    pgid = int((tmp_path / "tmp" / "left.pid").read_text())
    assert "1 passed" in done.stdout, done.stdout
    assert done.returncode == 1, done.stdout
    assert f"process group {pgid} (left running on purpose) still running" in done.stdout
    assert group_members(pgid) == {}


def test_a_folder_left_by_the_tests_services_fails_the_run_and_is_removed(tmp_path: Path) -> None:
    done = run_inner(tmp_path, "test_leaves_a_folder_named_after_its_server", "test_leaves_a_folder_named_after_this")
    assert "2 passed" in done.stdout, done.stdout
    assert done.returncode == 1, done.stdout
    left = [line.split("left behind: ", 1)[1] for line in done.stdout.splitlines() if "left behind: " in line]
    assert sorted(Path(path).name.split("-")[1] for path in left) == ["held", "photo"], done.stdout
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("triage-")]


def test_a_clean_run_passes_and_other_peoples_folders_are_not_the_tests(tmp_path: Path) -> None:
    done = run_inner(tmp_path, "test_cleans_up", "test_leaves_a_folder_of_someone_else")
    assert done.returncode == 0, done.stdout
    assert "left behind" not in done.stdout
    assert (tmp_path / "tmp" / "triage-held-1-other").is_dir()


def test_a_folder_there_before_the_run_is_not_the_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(started_processes, "temp_bases", lambda: [tmp_path])
    registry = Registry()
    old = tmp_path / f"{HELD_PREFIX}{os.getpid()}-old"  # named after this process too: its id used again
    old.mkdir()
    registry.before = set(temp_entries([tmp_path]))
    new = tmp_path / f"{PHOTO_PREFIX}{os.getpid()}-new"
    new.write_bytes(b"photo")
    assert registry.leftovers() == ({}, [new])
