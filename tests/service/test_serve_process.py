"""The harness of the end-to-end tests (``serve_process.py``): the whole log is searched, and a test that fails
while its ``triage serve`` runs leaves none of the service's processes or temporary folders behind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.service import serve_process
from tests.service.serve_process import Served, serving
from tests.started_processes import REGISTRY, group_members, temp_bases, temp_entries

START_UP_LINE = "requests and answers through PacketTransport"


def test_a_start_up_line_pushed_far_from_the_end_of_the_log_is_found(tmp_path: Path) -> None:
    """A slow start-up: the start-up lines, then many health checks answered 503 before the workers are ready."""
    log = tmp_path / "serve.log"
    health = '{"level": "INFO", "message": "127.0.0.1:50000 - \\"GET /health HTTP/1.1\\" 503"}'
    log.write_text("\n".join([f'{{"level": "INFO", "message": "{START_UP_LINE}"}}', *[health] * 100]) + "\n")
    served = Served(proc=None, url="http://127.0.0.1:1", log=log)  # type: ignore[arg-type]  (only the log is read)
    assert len(log.read_text()) - log.read_text().index(START_UP_LINE) > 4000
    assert served.logged(START_UP_LINE)
    assert START_UP_LINE in served.output()
    assert not served.logged("requests and answers through MPQueueTransport")
    assert START_UP_LINE not in served.tail()  # the tail is for messages only


def test_a_test_that_fails_while_serving_still_stops_the_whole_group(random_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), serving(random_model_dir / "triage.onnx", tmp_path / "serve.log") as served:
        members = served.members()
        assert len(members) >= 4, members  # supervisor, queue manager, inference worker(s), HTTP process
        1 / 0  # noqa: B018  (a failing test body)
    assert group_members(served.pgid) == {}
    assert served.proc.returncode == 0  # stopped by SIGTERM, drained and exited on its own
    assert served.logged("stopped")
    ours = REGISTRY.seen[served.pgid]
    assert ours >= set(members)
    assert not [path for path, pid in temp_entries(temp_bases()).items() if pid in ours]


def test_a_service_killed_outright_by_a_test_has_its_folders_removed(random_model_dir: Path, tmp_path: Path) -> None:
    """What a SIGKILLed service leaves (its held-request and metrics folders) goes when the harness stops it."""
    with serving(random_model_dir / "triage.onnx", tmp_path / "serve.log") as served:
        ours = set(served.members())
        left = [path for path, pid in temp_entries(temp_bases()).items() if pid in ours]
        assert {path.name.split("-")[1] for path in left} >= {"held", "metrics"}, left
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait()
    assert group_members(served.pgid) == {}
    assert not [path for path in left if path.exists()]


def test_a_service_that_exits_at_start_up_fails_the_test_and_leaves_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(AssertionError, match="triage serve exited with 2"),
        serving(tmp_path / "missing.onnx", tmp_path / "serve.log"),
    ):
        pass
    pgid = list(REGISTRY.groups)[-1]
    assert group_members(pgid) == {}


def test_a_service_stopped_during_its_start_up_leaves_nothing(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not healthy in time: stopped wherever its start-up had got to (its signal handlers may not be set yet), with
    its whole group."""
    monkeypatch.setattr(serve_process, "START_S", 0.5)  # spawning the workers and loading the model take longer
    with (
        pytest.raises(AssertionError, match=r"was not healthy after 0\.5 s"),
        serving(random_model_dir / "triage.onnx", tmp_path / "serve.log"),
    ):
        pass
    pgid = list(REGISTRY.groups)[-1]
    assert group_members(pgid) == {}
    assert not [path for path, pid in temp_entries(temp_bases()).items() if pid in REGISTRY.seen[pgid]]
