"""Request parsing details that the HTTP tests reach only indirectly: file parts sent without a filename, other
fields, and base64 that is not even ASCII."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from service.http.form_stream import MemoryWriter
from service.http.uploads import TicketUpload, UploadLimits, _decode_base64, receive_upload


async def read_upload(request: Request) -> TicketUpload:
    """The service's request parsing with the photos kept in memory instead of hand-off files."""
    return await receive_upload(request, MemoryWriter)


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(ticket: Annotated[TicketUpload, Depends(read_upload)]) -> dict[str, list]:
        return {
            "names": [p.name for p in ticket.photos],
            "sizes": [len(p.data) for p in ticket.photos],
            "sha": [hashlib.sha256(p.data).hexdigest() for p in ticket.photos],
        }

    return app


@pytest.mark.parametrize("name", ["jpeg", "png", "webp", "heic", "png16", "animated_png"])
def test_a_photo_sent_without_a_filename_keeps_its_bytes(photos: dict[str, bytes], name: str) -> None:
    data = photos[name]
    answer = TestClient(echo_app()).post("/echo", files=[("file", (None, data))])
    assert answer.status_code == 200
    assert answer.json() == {"names": [None], "sizes": [len(data)], "sha": [hashlib.sha256(data).hexdigest()]}


@pytest.mark.parametrize("data", [b"plain ascii", "écran cassé 屏幕 📱".encode(), b"\xff\xfe\x00binary"])
def test_text_and_binary_parts_without_a_filename_arrive_as_sent(data: bytes) -> None:
    answer = TestClient(echo_app()).post("/echo", files=[("file", (None, data))])
    assert answer.json()["sha"] == [hashlib.sha256(data).hexdigest()]


@pytest.mark.parametrize("text", ["/9j/4AAQé", "😀😀😀😀", "AAAA\u00ff"])
def test_non_ascii_base64_is_a_photo_error_not_a_crash(text: str) -> None:
    photo = _decode_base64(text, UploadLimits())
    assert photo.error is not None and photo.error.status == 422
    assert "base64" in photo.error.message and photo.data == b""


def test_a_ticket_repr_leaves_the_photo_bytes_out() -> None:
    """LitServe formats every request into a debug message; a photo's bytes must not be in it."""
    from service.http.uploads import TicketUpload, UploadedPhoto

    ticket = TicketUpload("rid", 0.0, (UploadedPhoto("big.jpg", b"\xff" * 3_000_000),))
    text = repr(ticket)
    assert "big.jpg" in text and len(text) < 500


def test_a_phone_sized_photo_arrives_whole_and_non_file_fields_are_dropped() -> None:
    big, small = b"\xff" + os.urandom(5_000_000), b"\x89" + os.urandom(1000)
    files = [("file", ("a.jpg", big, "image/jpeg")), ("note", (None, b"cracked")), ("file", ("b.png", small))]
    answer = TestClient(echo_app()).post("/echo", files=files)
    assert answer.status_code == 200
    digests = [hashlib.sha256(big).hexdigest(), hashlib.sha256(small).hexdigest()]
    assert answer.json() == {"names": ["a.jpg", "b.png"], "sizes": [len(big), len(small)], "sha": digests}


def test_broken_multipart_framing_is_a_400_with_the_reason() -> None:
    app = FastAPI()

    @app.post("/echo")
    async def echo(ticket: Annotated[TicketUpload, Depends(read_upload)]) -> dict[str, int]:
        return {"photos": len(ticket.photos)}

    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nBroken header\r\n\r\nabc'
    answer = TestClient(app).post("/echo", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert answer.status_code == 400
    assert answer.json()["detail"]


def test_more_parts_than_the_limit_are_413_like_too_many_photos() -> None:
    """Eleven ``file`` parts and a hundred and eleven are both too many photos: one status for both."""
    limits = UploadLimits()
    client = TestClient(echo_app())
    for count in (limits.max_images + 1, limits.max_images + 101):
        answer = client.post("/echo", files=[("file", (f"{i}.jpg", b"\xff\xd8")) for i in range(count)])
        assert answer.status_code == 413, (count, answer.text)


@pytest.mark.parametrize("prefix", ["data:image/jpeg;base64,", "data:image/jpeg;charset=binary;name=a.jpg;base64,"])
def test_data_uris_with_parameters_are_read(prefix: str) -> None:
    photo = os.urandom(300)
    assert _decode_base64(prefix + base64.b64encode(photo).decode(), UploadLimits()).data == photo


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_a_compressed_body_is_415_naming_the_encoding(encoding: str) -> None:
    """The body would be parsed as if it were not compressed, and fail as "no photo" or "malformed JSON"."""
    import gzip

    body = gzip.compress(b'{"images": ["aGVsbG8="]}')
    headers = {"content-type": "application/json", "content-encoding": encoding}
    answer = TestClient(echo_app()).post("/echo", content=body, headers=headers)
    assert answer.status_code == 415
    assert answer.json()["detail"].startswith(f"content encoding {encoding!r} is not accepted")


def test_an_identity_content_encoding_is_read() -> None:
    headers = {"content-type": "application/json", "content-encoding": "identity"}
    answer = TestClient(echo_app()).post("/echo", content=b'{"images": ["aGVsbG8="]}', headers=headers)
    assert answer.status_code == 200 and answer.json()["sizes"] == [5]
