"""The pure parts of ``bench/peer_servers.py``: the requests it sends, the TorchServe config and TorchScript trace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.peer_servers import octet_request
from bench.peers import torchserve_setup as ts
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
