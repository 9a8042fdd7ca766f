"""Reading a ticket's photos from an HTTP request: multipart ``file`` parts or JSON ``{"images": [base64, ...]}``.

This runs in the HTTP server process as a FastAPI dependency, before anything is queued for a worker, and turns
every malformed *request* into a clean 4xx (``{"detail": ...}``): 400 for a body that is not what the contract
describes, 413 for too many photos, 415 for an unsupported content type. A bad *photo* is not a bad request: it
becomes that photo's own error (e.g. invalid base64 is 422, an oversized file 413) and travels with the others,
so the rest of the ticket is still routed.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from fastapi import HTTPException, Request
from pydantic import BaseModel, ValidationError

from service.http.form_stream import FormError, FormLimits, PartWriter, TooManyParts, read_file_parts
from service.inference.intake import IntakeError

# What a client that sent something else (an empty body, no content type, another type) is told to send.
WHAT_TO_SEND = (
    "send the photos as multipart/form-data 'file' parts (e.g. curl -F file=@photo.jpg URL) "
    'or as application/json {"images": ["<base64>", ...]}'
)
_DATA_URI = re.compile(r"^data:[\w.+/-]*(?:;[\w.+-]+=[^;,]*)*;base64,", re.IGNORECASE)  # RFC 2397 parameters


@dataclass(frozen=True)
class UploadLimits:
    max_images: int = 10
    max_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class UploadedPhoto:
    """One photo as received: its bytes, or the error that already rules it out.

    The bytes stay out of ``repr``: LitServe formats every request it handles into a debug message whether or
    not debug logging is on, and the repr of a 3 MB photo costs more CPU than decoding it. ``shared`` is the file
    the bytes were handed over in instead (``service.runtime.photo_handoff``): its first ``shared_size`` bytes (the
    file is reused, and may be longer). ``read`` gives the bytes either way.
    """

    name: str | None
    data: bytes = field(default=b"", repr=False)
    error: IntakeError | None = None
    shared: str | None = None
    shared_size: int = 0

    def read(self) -> bytes:
        """The photo's bytes; an ``IntakeError`` if its hand-off file is gone or shorter (the request was already
        answered and the file removed or reused)."""
        if self.shared is None:
            return self.data
        try:
            with open(self.shared, "rb") as f:
                data = f.read(self.shared_size)
        except FileNotFoundError:
            data = b""
        if len(data) != self.shared_size:
            raise IntakeError(408, "the request was answered before its photo was read", "expired")
        return data


@dataclass(frozen=True)
class TicketUpload:
    """A ticket's photos in upload order, with the request id and the time the HTTP server had read them."""

    request_id: str
    received_at: float
    photos: tuple[UploadedPhoto, ...]


class RouteJSON(BaseModel):
    """The JSON form of a ticket: base64-encoded image files (a ``data:`` URI prefix is accepted)."""

    images: list[str]


def reject(request: Request, status: int, reason: str, message: str) -> HTTPException:
    """An ``HTTPException`` for a rejected request, with its reason noted for the error metric."""
    request.state.error_reason = reason
    return HTTPException(status_code=status, detail=message)


def _limits(request: Request) -> UploadLimits:
    return getattr(request.app.state, "upload_limits", UploadLimits())


def _check_count(request: Request, count: int, limits: UploadLimits, what: str) -> None:
    if count == 0:
        raise reject(request, 400, "malformed_request", f"the request holds no photos; send {what}")
    if count > limits.max_images:
        raise reject(
            request, 413, "too_many_images", f"{count} photos in one request; the limit is {limits.max_images}"
        )


def _too_large(size: int, limits: UploadLimits) -> IntakeError:
    return IntakeError(413, f"file is {size} bytes; the limit is {limits.max_bytes}", "too_large")


async def _read_multipart(
    request: Request, limits: UploadLimits, new_writer: Callable[[], PartWriter]
) -> list[UploadedPhoto]:
    """The ``file`` parts, each streamed into a writer from ``new_writer`` as it arrives
    (``service.http.form_stream``)."""
    form_limits = FormLimits(max_files=limits.max_images, max_parts=limits.max_images + 100, max_bytes=limits.max_bytes)
    async with aclosing(request.stream()) as stream:
        try:
            parts, count = await read_file_parts(request.headers["content-type"], stream, form_limits, new_writer)
        except TooManyParts as exc:
            raise reject(request, 413, "too_many_images", str(exc)) from exc
        except FormError as exc:
            raise reject(request, 400, "malformed_request", str(exc)) from exc
    try:
        _check_count(request, count, limits, "one or more multipart 'file' parts")
    except HTTPException:
        for part in parts:
            if part.writer is not None:
                part.writer.discard()
        raise
    return [
        UploadedPhoto(p.filename, error=_too_large(p.size, limits))
        if p.size > limits.max_bytes
        else UploadedPhoto(p.filename, p.data, shared=p.shared, shared_size=p.size if p.shared else 0)
        for p in parts
    ]


def _decode_base64(text: str, limits: UploadLimits) -> UploadedPhoto:
    compact = "".join(_DATA_URI.sub("", text.strip(), count=1).split())
    if len(compact) // 4 * 3 > limits.max_bytes + 2:
        return UploadedPhoto(None, error=_too_large(len(compact) // 4 * 3, limits))
    try:
        return UploadedPhoto(None, base64.b64decode(compact, validate=True))
    except ValueError as exc:  # binascii.Error, or a character outside ASCII
        return UploadedPhoto(None, error=IntakeError(422, f"image is not valid base64: {exc}", "bad_base64"))


async def _read_json(request: Request, limits: UploadLimits, declared: bool) -> list[UploadedPhoto]:
    """The JSON form; ``declared``: the request said it was JSON (a body with no content type is read as JSON too,
    and if it is not, or is empty, the client most likely forgot how to send photos: say how)."""
    body = await request.body()
    if not body.strip():
        raise reject(request, 400, "malformed_request", f"the request body is empty; {WHAT_TO_SEND}")
    try:
        parsed = RouteJSON.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" and not declared:
            message = f"the request has no content type and its body is not JSON; {WHAT_TO_SEND}"
        elif first["type"] == "json_invalid":
            message = f"malformed JSON: {first['msg']}"
        else:
            where = ".".join(str(p) for p in first["loc"]) or "body"
            message = f'expected {{"images": ["<base64>", ...]}}; {where}: {first["msg"]}'
        raise reject(request, 400, "malformed_request", message) from exc
    _check_count(request, len(parsed.images), limits, 'a non-empty "images" list')
    return [_decode_base64(text, limits) for text in parsed.images]


async def receive_upload(request: Request, new_writer: Callable[[], PartWriter]) -> TicketUpload:
    """The ticket's photos, multipart ones written by writers from ``new_writer`` as they arrive, or an
    ``HTTPException`` for a malformed request (nothing written is left behind then)."""
    limits = _limits(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    try:
        if encoding not in ("", "identity"):
            raise reject(
                request,
                415,
                "unsupported_media_type",
                f"content encoding {encoding!r} is not accepted; send the body uncompressed (photos are compressed)",
            )
        if content_type == "multipart/form-data":
            photos = await _read_multipart(request, limits, new_writer)
        elif content_type in ("", "application/json") or content_type.endswith("+json"):
            photos = await _read_json(request, limits, declared=content_type != "")
        else:
            raise reject(
                request,
                415,
                "unsupported_media_type",
                f"content type {content_type!r} is not accepted; {WHAT_TO_SEND}",
            )
    except HTTPException as exc:
        # Raised while reading the body (size limit, broken multipart framing) by the framework itself.
        if getattr(request.state, "error_reason", None) is None:
            request.state.error_reason = "payload_too_large" if exc.status_code == 413 else "malformed_request"
        raise
    request_id = getattr(request.state, "request_id", None) or ""
    return TicketUpload(request_id, time.time(), tuple(photos))
