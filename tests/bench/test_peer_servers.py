"""The pure parts of ``bench/peer_servers.py``: the requests it sends, the TorchServe config and TorchScript trace,
/proc stat parsing and the targets table."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.peer_servers import octet_request
from bench.peers import torchserve_setup as ts
from bench.peers.targets import MIB, Figures, p99_ms, targets
from bench.process_stats import PAGE, parse_stat, pss_bytes
from model.network import build_network


def test_octet_request_is_one_complete_http_request() -> None:
    data = b"\xff\xd8 not really a JPEG \r\n\r\n \xff\xd9"
    request = octet_request("/predictions/triage", data)
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert lines[0] == "POST /predictions/triage HTTP/1.1"
    assert headers["Content-Type"] == "application/octet-stream"
    assert int(headers["Content-Length"]) == len(body) == len(data)
    assert body == data


def test_torchserve_listens_on_loopback_only_without_token_auth(tmp_path: Path) -> None:
    stock = ts.properties((8080, 8081, 8082), tmp_path / "store", "stock")
    tuned = ts.properties((8080, 8081, 8082), tmp_path / "store", "tuned")
    props = dict(line.split("=", 1) for line in tuned.splitlines())
    assert [props[k] for k in ("inference_address", "management_address", "metrics_address")] == [
        f"http://127.0.0.1:{port}" for port in (8080, 8081, 8082)
    ]
    assert props["model_store"] == str(tmp_path / "store")
    assert props["disable_token_authorization"] == "true"
    assert set(tuned.splitlines()) - set(stock.splitlines()) == {"async_logging=true", "disable_system_metrics=true"}
    assert "--log-config" in ts.command(tmp_path, "tuned") and "--log-config" not in ts.command(tmp_path, "stock")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of torch.export
def test_trace_matches_the_eager_network_at_other_sizes_and_batches(tmp_path: Path) -> None:
    net = build_network(seed=0).eval()
    ts.trace(net, tmp_path / "net.pt")
    traced = torch.jit.load(str(tmp_path / "net.pt"))
    x = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(traced(x), net(x))


def test_parse_stat_reads_groups_and_rss_past_a_command_name_with_spaces_and_parentheses() -> None:
    rest = " ".join(["S", "1", "4242", "4242"] + ["0"] * 17 + ["1234"] + ["0"] * 20)  # rss is field 24
    stat = parse_stat(4300, f"4300 (java (main) x) {rest}\n")
    assert (stat.comm, stat.state, stat.pgid, stat.sid, stat.rss) == ("java (main) x", "S", 4242, 4242, 1234 * PAGE)


def figures(
    phone: float, small: float, p99: float, rss_mib: int, start_s: float, pss_mib: int | None = None
) -> Figures:
    rate = {("4032x3024", c): phone / (2 if c == 1 else 1) for c in (1, 4)} | {("640x480", c): small for c in (1, 4)}
    pss = (rss_mib if pss_mib is None else pss_mib) * MIB
    return Figures(rate, {k: p99 * k[1] for k in rate}, rss_mib * MIB, start_s, pss)  # p99 grows with concurrency


def test_targets_use_the_best_rate_compare_every_level_and_say_what_was_not_measured() -> None:
    ours = figures(phone=40, small=100, p99=10, rss_mib=500, start_s=1.5, pss_mib=950)
    stock, tuned = figures(9, 60, 20, 1500, 9.0), figures(35, 90, 11, 900, 8.0)
    rows = {row[0]: row[1:] for row in targets(ours, {"ts-stock": stock, "ts-tuned": tuned}, [1, 4])}
    assert rows["4032x3024 photos/s >= 4x ts-stock"] == ["40.0", "9.0", "35.0", "met (4.44x)"]  # best: 40, not 20
    assert rows["4032x3024 photos/s >= 1.2x ts-tuned"][-1] == "missed (1.14x)"
    assert rows["640x480 photos/s above both"][-1] == "met (1.67x, 1.11x)"
    assert rows["640x480 p99 ms below both, concurrency 4"] == ["40.0", "80.0", "44.0", "met"]
    assert rows["peak RSS MiB, summed, below both"] == ["500", "1500", "900", "met"]
    assert rows["peak PSS MiB, summed, below both"] == ["950", "1500", "900", "missed"]
    assert rows["launch to first answer s, below both"] == ["1.50", "9.00", "8.00", "met"]
    assert len(rows) == 3 + 2 * 2 + 3
    worse = targets(ours, {"ts-stock": stock, "ts-tuned": figures(35, 90, 9, 400, 1.0)}, [1, 4])
    assert [row[-1] for row in worse[3:]] == ["missed"] * 7
    alone = targets(ours, {"ts-tuned": "could not be run: RuntimeError: ts-tuned exited with status 1"}, [1])
    assert alone[0][1:] == ["40.0", "-", "-", "not measured (ts-stock: not run)"]
    assert alone[1][-1] == "not measured (ts-tuned: could not be run: RuntimeError: ts-tuned exited with status 1)"


def test_a_peer_that_answers_nothing_loses_the_p99_comparison() -> None:
    latencies = [0.001 * k for k in range(1, 202)]
    assert p99_ms(latencies) == pytest.approx(1e3 * float(np.percentile(latencies, 99)))
    ours = figures(phone=40, small=100, p99=10, rss_mib=500, start_s=1.5)
    silent = figures(9, 60, 20, 1500, 9.0)
    silent.p99[("4032x3024", 4)] = p99_ms([])
    rows = {row[0]: row[1:] for row in targets(ours, {"ts-stock": silent, "ts-tuned": silent}, [1, 4])}
    assert rows["4032x3024 p99 ms below both, concurrency 4"] == ["40.0", "inf", "inf", "met"]


def test_pss_of_this_process_is_positive_and_below_its_rss() -> None:
    me = os.getpid()
    rss = parse_stat(me, Path(f"/proc/{me}/stat").read_text()).rss
    assert 0 < pss_bytes(me) <= rss
    assert pss_bytes(2**22 + 1) == 0  # no such process (above the kernel's pid limit)
