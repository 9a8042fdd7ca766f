"""Streaming ``multipart/form-data``: each photo part goes to its writer chunk by chunk while the body arrives.

Starlette's form parser holds every part in a ``SpooledTemporaryFile`` (a growing ``BytesIO``), the upload code
then reads it into one more ``bytes`` and the hand-off writes that to ``/dev/shm``: three copies of a phone photo
into fresh memory after its last byte has arrived, 2-6 ms for a 3.6 MB photo. Here python-multipart's parser hands
each slice of a ``file`` part straight to a ``PartWriter`` (a hand-off file, or memory), so a photo is written once,
while the rest of it is still on the wire.

Parts named other than ``file`` are read past and dropped; how many there may be is bounded, as are their headers.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

FILE_FIELD = "file"
PREAMBLE_BYTES = 64 * 1024  # the most text before the first boundary line that is looked through


class FormError(ValueError):
    """The body is not the ``multipart/form-data`` it claims to be (a 400 for the whole request)."""


class TooManyParts(FormError):
    """More parts than ``FormLimits.max_parts`` (a 413, as too many photos are)."""


class PartWriter(Protocol):
    """Where one photo part's bytes go as they arrive."""

    def write(self, chunk: memoryview) -> None: ...

    def close(self) -> tuple[bytes, str | None]:
        """The part is complete: its bytes if held in memory, else ``b""`` and the file holding them."""
        ...

    def discard(self) -> None:
        """Drop the part (idempotent, also after ``close``): free the memory, remove the file."""
        ...


class MemoryWriter:
    """A ``PartWriter`` that keeps the part in memory."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, chunk: memoryview) -> None:
        self._chunks.append(bytes(chunk))

    def close(self) -> tuple[bytes, str | None]:
        return b"".join(self._chunks), None

    def discard(self) -> None:
        self._chunks.clear()


@dataclass(frozen=True)
class FilePart:
    """One ``file`` part: its filename (None when the part has none), byte count and where its bytes are.

    ``size > max_bytes`` means the bytes were dropped as they arrived (``data == b""``, ``shared is None``).
    ``writer`` (closed) is what to ``discard`` if the caller drops the part after all.
    """

    filename: str | None
    size: int
    data: bytes = b""
    shared: str | None = None
    writer: PartWriter | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FormLimits:
    max_files: int  # ``file`` parts kept; the rest are counted and dropped
    max_parts: int  # parts of any name; more is a FormError
    max_bytes: int  # per ``file`` part; a larger part is counted and dropped


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode(charset)
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _charset(params: dict[bytes, bytes]) -> str:
    """The ``charset`` parameter's codec when it is a text encoding that reads ASCII as ASCII (part names and
    headers are ASCII), else UTF-8: ``rot13`` or ``zlib`` are codecs too, and UTF-16 would hide the part names."""
    name = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        codec = codecs.lookup(name)
        if codec._is_text_encoding and codec.decode(b'file; name="x"')[0] == 'file; name="x"':
            return codec.name
    except (LookupError, ValueError):
        pass
    return "utf-8"


class _Reader:
    """python-multipart's callbacks: headers into ``disposition``, ``file`` part data into its writer."""

    def __init__(self, limits: FormLimits, new_writer: Callable[[], PartWriter], charset: str) -> None:
        self.limits, self.new_writer, self.charset = limits, new_writer, charset
        self.parts: list[FilePart] = []
        self.files = 0  # ``file`` parts seen, kept or not
        self.writers: list[PartWriter] = []  # every writer opened, for clean-up on failure
        self._parts = 0
        self._header: list[bytes] = []
        self._value: list[bytes] = []
        self._disposition = b""
        self._is_file = False
        self._filename: str | None = None
        self._size = 0
        self._writer: PartWriter | None = None

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.limits.max_parts:
            raise TooManyParts(f"more than {self.limits.max_parts} parts in one request")
        self._disposition, self._is_file, self._filename, self._size, self._writer = b"", False, None, 0, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header.append(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value.append(data[start:end])

    def on_header_end(self) -> None:
        if b"".join(self._header).strip().lower() == b"content-disposition":
            self._disposition = b"".join(self._value)
        self._header.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise FormError('a part\'s Content-Disposition header has no "name"')
        if _decode(options[b"name"], self.charset) != FILE_FIELD:
            return
        self._is_file = True
        self.files += 1
        filename = options.get(b"filename")
        self._filename = None if filename is None else _decode(filename, self.charset)
        if self.files <= self.limits.max_files:
            self._writer = self.new_writer()
            self.writers.append(self._writer)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._is_file:
            return
        self._size += end - start
        if self._writer is None:
            return
        if self._size > self.limits.max_bytes:
            self._writer.discard()
            self._writer = None
            return
        self._writer.write(memoryview(data)[start:end])

    def on_part_end(self) -> None:
        if not self._is_file or self.files > self.limits.max_files:
            return
        data, shared = self._writer.close() if self._writer is not None else (b"", None)
        self.parts.append(FilePart(self._filename, self._size, data, shared, self._writer))

    def callbacks(self) -> dict[str, Callable[..., None]]:
        names = ("part_begin", "header_field", "header_value", "header_end", "headers_finished", "part_data")
        return {f"on_{name}": getattr(self, f"on_{name}") for name in (*names, "part_end")}


async def _without_preamble(stream: AsyncIterator[bytes], boundary: bytes, limit: int) -> AsyncIterator[bytes]:
    """``stream`` from its first boundary line on: RFC 2046 lets a body open with a preamble (text for mail readers),
    which python-multipart refuses. Up to ``limit`` bytes of it are looked through."""
    delimiter = b"--" + boundary
    head: bytes | None = b""
    async for chunk in stream:
        if head is None:
            yield chunk
            continue
        head = head + chunk if head else chunk
        if head.startswith(delimiter):
            start = 0
        else:
            found = head.find(b"\r\n" + delimiter)
            start = found + 2 if found >= 0 else -1
        if start > limit or (start < 0 and len(head) > limit):
            raise FormError(f"no multipart boundary line within the first {limit} bytes of the body")
        if start >= 0:
            yield head[start:]
            head = None
    if head:
        yield head  # no boundary at all: the parser says so


async def read_file_parts(
    content_type: str, stream: AsyncIterator[bytes], limits: FormLimits, new_writer: Callable[[], PartWriter]
) -> tuple[list[FilePart], int]:
    """The ``file`` parts of a ``multipart/form-data`` body, in order, and how many there were in all.

    Parts past ``limits.max_files`` are counted, not kept. Raises ``FormError`` for a body that is not well-formed
    multipart (no boundary, broken framing or headers, too many parts, no closing boundary); every writer opened is
    then discarded, and the caller owns the kept parts' files otherwise.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("multipart/form-data without a boundary parameter")
    reader = _Reader(limits, new_writer, _charset(params))
    try:
        try:
            parser = MultipartParser(boundary, reader.callbacks())
            async for chunk in _without_preamble(stream, boundary, PREAMBLE_BYTES):
                parser.write(chunk)
        except FormParserError as exc:
            raise FormError(f"invalid multipart body: {exc}") from exc
        if parser.state != MultipartState.END:
            raise FormError("the multipart body ended before its closing boundary")
    except BaseException:
        for writer in reader.writers:
            writer.discard()
        raise
    return reader.parts, reader.files
