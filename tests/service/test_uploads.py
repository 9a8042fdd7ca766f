"""Request parsing details that the HTTP tests reach only indirectly: file parts sent without a filename, and
base64 that is not even ASCII."""

from __future__ import annotations

import os
from tempfile import SpooledTemporaryFile
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.formparsers import _user_safe_decode

from service.uploads import TicketUpload, UploadLimits, _decode_base64, field_bytes, read_upload


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "heic", "png16", "animated_png"])
def test_a_photo_sent_without_a_filename_keeps_its_bytes(photos: dict[str, bytes], name: str) -> None:
    data = photos[name]
    # What the form parser hands over for a part without a filename.
    assert field_bytes(_user_safe_decode(data, "utf-8")) == data


@pytest.mark.parametrize("data", [b"plain ascii", "écran cassé 屏幕 📱".encode(), b"\xff\xfe\x00binary", b""])
def test_text_and_binary_fields_round_trip(data: bytes) -> None:
    assert field_bytes(_user_safe_decode(data, "utf-8")) == data


@pytest.mark.parametrize("text", ["/9j/4AAQé", "😀😀😀😀", "AAAA\u00ff"])
def test_non_ascii_base64_is_a_photo_error_not_a_crash(text: str) -> None:
    photo = _decode_base64(text, UploadLimits())
    assert photo.error is not None and photo.error.status == 422
    assert "base64" in photo.error.message and photo.data == b""


def test_a_ticket_repr_leaves_the_photo_bytes_out() -> None:
    """LitServe formats every request into a debug message; a photo's bytes must not be in it."""
    from service.uploads import TicketUpload, UploadedPhoto

    ticket = TicketUpload("rid", 0.0, (UploadedPhoto("big.jpg", b"\xff" * 3_000_000),))
    text = repr(ticket)
    assert "big.jpg" in text and len(text) < 500


def test_a_phone_sized_photo_is_parsed_in_memory_and_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts up to the byte limit never roll over to a temporary file (whose writes each cost a thread hop)."""
    rolled: list[int] = []
    original = SpooledTemporaryFile.rollover

    def spy(self: SpooledTemporaryFile) -> None:
        rolled.append(1)
        original(self)

    monkeypatch.setattr(SpooledTemporaryFile, "rollover", spy)
    app = FastAPI()

    @app.post("/echo")
    async def echo(ticket: Annotated[TicketUpload, Depends(read_upload)]) -> dict[str, list[int]]:
        return {"sizes": [len(p.data) for p in ticket.photos], "heads": [p.data[0] for p in ticket.photos]}

    big, small = b"\xff" + os.urandom(5_000_000), b"\x89" + os.urandom(1000)
    files = [("file", ("a.jpg", big, "image/jpeg")), ("file", ("b.png", small, "image/png"))]
    answer = TestClient(app).post("/echo", files=files)
    assert answer.status_code == 200
    assert answer.json() == {"sizes": [len(big), len(small)], "heads": [0xFF, 0x89]}
    assert rolled == []


def test_broken_multipart_framing_is_a_400_with_the_reason() -> None:
    app = FastAPI()

    @app.post("/echo")
    async def echo(ticket: Annotated[TicketUpload, Depends(read_upload)]) -> dict[str, int]:
        return {"photos": len(ticket.photos)}

    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nBroken header\r\n\r\nabc'
    answer = TestClient(app).post("/echo", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert answer.status_code == 400
    assert answer.json()["detail"]
