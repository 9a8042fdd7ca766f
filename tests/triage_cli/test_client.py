"""The stdlib client's behaviour when it cannot reach a service or read a file (routing itself is end to end)."""

from __future__ import annotations

import socket
from pathlib import Path

from triage_cli.client import route_remote


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_service_gives_every_file_an_error(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    results = route_remote([photo, tmp_path / "missing.jpg"], f"http://127.0.0.1:{closed_port()}")
    assert results[0]["file"] == str(photo) and results[0]["error"]["status"] == 503
    assert "cannot reach" in results[0]["error"]["message"]
    assert results[1]["error"]["status"] == 404


def test_no_files_no_requests() -> None:
    assert route_remote([], "http://127.0.0.1:9") == []


def test_a_non_ascii_key_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    (result,) = route_remote([photo], f"http://127.0.0.1:{closed_port()}", api_key="ключ")
    assert result["error"]["status"] == 400 and "printable ASCII" in result["error"]["message"]
