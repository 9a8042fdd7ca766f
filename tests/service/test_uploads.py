"""Request parsing details that the HTTP tests reach only indirectly: file parts sent without a filename, and
base64 that is not even ASCII."""

from __future__ import annotations

import pytest
from starlette.formparsers import _user_safe_decode

from service.uploads import UploadLimits, _decode_base64, field_bytes


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
