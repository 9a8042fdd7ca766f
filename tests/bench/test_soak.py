"""The soak of ``bench/soak.py`` in short: about 15 s of load at concurrency 16 with 640x480 photos against a real
``triage serve``, then SIGTERM to its main process with requests in flight. No timing or RSS-growth assertions:
15 s on a shared machine is too noisy for either."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.service_load import ServerConfig, start_server
from bench.soak import checks, print_sigterm, print_soak, render_requests, sigterm_under_load, soak
from tests.started_processes import REGISTRY, stop_group


@pytest.mark.slow
def test_soak_then_sigterm_under_load(
    random_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = render_requests(phone=0, small=16)
    log = tmp_path / "serve.log"
    proc, port = start_server(
        random_model_dir / "triage.onnx", ServerConfig(threads=1), log, {"TRIAGE_DRAIN_TIMEOUT": "6"}
    )
    REGISTRY.watch(proc.pid, f"triage serve :{port} of the soak")  # the leader of its own process group
    try:
        args = argparse.Namespace(concurrency=16, seconds=15.0, warmup=2.0, rss_every=3.0)
        soaked = soak(proc, port, requests, args)
        print_soak(soaked, bucket=5.0)
        assert not soaked.failure, log.read_text(errors="replace")[-4000:]
        assert soaked.errors == {}, soaked.errors
        assert sum(1 for *_, outcome in soaked.records if outcome == "200") > 16

        roles = sorted(soaked.roles.values())
        assert {"main", "queue manager", "HTTP worker", "inference worker"} <= set(roles), soaked.roles
        assert roles.count("HTTP worker") >= 1 and roles.count("inference worker") >= 1
        assert soaked.roles.keys() <= soaked.rss.keys(), (soaked.roles, soaked.rss.keys())
        assert all(len(soaked.rss[pid]) >= 3 for pid in soaked.roles), soaked.rss  # start, every 3 s, end

        stopped = sigterm_under_load(proc, port, requests, concurrency=16, lead=2.0)
        print_sigterm(stopped, concurrency=16)
        in_flight = stopped.outcomes(in_flight=True)
        assert sum(in_flight.values()) > 0, "nothing was in flight at SIGTERM"
        assert in_flight == {"200": sum(in_flight.values())}, (in_flight, log.read_text(errors="replace")[-4000:])
        assert stopped.exit_status == 0, log.read_text(errors="replace")[-4000:]
        assert stopped.left == []
        assert all(ok for _, ok in checks(soaked, stopped)), checks(soaked, stopped)
    finally:
        problem = stop_group(proc)  # whatever state the test left it in, its whole process group
    assert problem is None, problem
    assert "SIGTERM to the main process" in capsys.readouterr().out
