"""The streaming multipart reader: exact bytes whatever the chunking, limits that count without keeping, every
writer discarded when the body is bad, and a photo written while its request is still arriving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.http.form_stream import FilePart, FormError, FormLimits, MemoryWriter, read_file_parts

BOUNDARY = "form-stream-test-3d9c"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = FormLimits(max_files=10, max_parts=20, max_bytes=10_000)


def body(parts: Iterable[tuple[str, str | None, bytes]], closed: bool = True) -> bytes:
    """A multipart body of ``(field name, filename or None, bytes)`` parts."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


async def chunks(data: bytes, cuts: Iterable[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            yield data[start:cut]
            start = cut
    yield data[start:]


class Recorder(MemoryWriter):
    """A memory writer that remembers being discarded."""

    opened: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        super().__init__()
        self.discarded = False
        Recorder.opened.append(self)

    def discard(self) -> None:
        super().discard()
        self.discarded = True


def read(data: bytes, cuts: Iterable[int] = (), limits: FormLimits = LIMITS) -> tuple[list[FilePart], int]:
    Recorder.opened = []
    return asyncio.run(read_file_parts(CONTENT_TYPE, chunks(data, cuts), limits, Recorder))


# Data a client could send under this boundary (never the delimiter itself), near-misses of it included.
near_misses = [f"\r\n--{BOUNDARY[:-1]}x".encode(), f"\r\n--{BOUNDARY[:5]}".encode(), b"\r\n--", b"--" * 40]
part_bytes = (st.binary(max_size=600) | st.sampled_from(near_misses)).filter(
    lambda b: f"\r\n--{BOUNDARY}".encode() not in b
)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.tuples(st.sampled_from(["file", "note"]), st.sampled_from([None, "a.jpg", "écran.png"]), part_bytes),
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_file_parts_arrive_exactly_whatever_the_chunking(parts: list, cuts: list[int]) -> None:
    kept, count = read(body(parts), cuts)
    files = [(filename, data) for name, filename, data in parts if name == "file"]
    assert count == len(files)
    assert [(p.filename, p.data, p.size, p.shared) for p in kept] == [(f, d, len(d), None) for f, d in files]


@settings(max_examples=100, deadline=None)
@given(preamble=part_bytes, cuts=st.lists(st.integers(0, 1500), max_size=8))
def test_a_preamble_before_the_first_boundary_is_skipped(preamble: bytes, cuts: list[int]) -> None:
    """RFC 2046: text before the first boundary line (ending in its CRLF) is not part of any part."""
    photo = ("file", "a.jpg", b"\xff\xd8 photo bytes " * 30)
    kept, count = read(preamble + b"\r\n" + body([photo, ("note", None, b"n")]), cuts)
    assert count == 1 and [(p.filename, p.data) for p in kept] == [("a.jpg", photo[2])]


def test_a_preamble_without_end_is_a_form_error() -> None:
    with pytest.raises(FormError, match="no multipart boundary line within the first 65536 bytes"):
        read(b"x" * 70_000 + body([GOOD]), cuts=[30_000, 60_000])


def test_parts_past_the_file_limit_are_counted_not_kept() -> None:
    limits = FormLimits(max_files=2, max_parts=20, max_bytes=10_000)
    kept, count = read(body([("file", f"{i}.jpg", bytes([i]) * 50) for i in range(4)]), limits=limits)
    assert count == 4 and [p.filename for p in kept] == ["0.jpg", "1.jpg"]
    assert len(Recorder.opened) == 2  # no writer for the parts that are not kept


def test_an_oversized_part_is_measured_and_dropped_as_it_arrives() -> None:
    kept, _ = read(body([("file", "big.jpg", b"x" * 10_001), ("file", "ok.jpg", b"y" * 10_000)]), cuts=[3000, 9000])
    assert [(p.filename, p.size, p.data) for p in kept] == [("big.jpg", 10_001, b""), ("ok.jpg", 10_000, b"y" * 10_000)]
    assert Recorder.opened[0].discarded and not Recorder.opened[1].discarded


GOOD = ("file", "first.jpg", b"kept so far" * 20)
NAMELESS = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (body([GOOD], closed=False), "closing boundary"),
        (body([GOOD])[:120], "closing boundary"),
        (body([GOOD], closed=False) + NAMELESS, 'no "name"'),
        (body([GOOD] + [("note", None, b"x")] * 20), "more than 20 parts"),
        (b"--other\r\n\r\nabc", "invalid multipart body"),
    ],
)
def test_a_malformed_body_is_a_form_error_and_every_writer_is_discarded(data: bytes, message: str) -> None:
    with pytest.raises(FormError, match=message):
        read(data, cuts=[50, 100])
    assert all(w.discarded for w in Recorder.opened)
    assert len(Recorder.opened) == (0 if message == "invalid multipart body" else 1)


def test_a_content_type_without_a_boundary_is_a_form_error() -> None:
    with pytest.raises(FormError, match="boundary"):
        asyncio.run(read_file_parts("multipart/form-data", chunks(b"", []), LIMITS, MemoryWriter))


def test_a_photo_is_written_while_the_rest_of_the_body_is_still_arriving() -> None:
    events: list[str] = []

    class Logged(MemoryWriter):
        def write(self, chunk: memoryview) -> None:
            events.append("write")
            super().write(chunk)

    async def stream(data: bytes) -> AsyncIterator[bytes]:
        async for chunk in chunks(data, range(4096, len(data), 4096)):
            events.append("chunk")
            yield chunk

    data = body([("file", "a.jpg", bytes(range(256)) * 200)])
    kept, _ = asyncio.run(read_file_parts(CONTENT_TYPE, stream(data), FormLimits(1, 5, 100_000), Logged))
    assert kept[0].data == bytes(range(256)) * 200
    assert events.index("write") < len(events) - 1 - events[::-1].index("chunk")  # a write before the last chunk


@settings(max_examples=300, deadline=None)
@given(
    junk=st.lists(
        st.sampled_from(
            [
                f"--{BOUNDARY}\r\n".encode(),
                f"--{BOUNDARY}--\r\n".encode(),
                b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n',
                b'Content-Disposition: form-data; name="note"\r\n',
                b"Content-Disposition: form-data\r\n",
                b"Content-Type: image/jpeg\r\n",
                b"\r\n",
                b"\r",
                b"-",
                b"\xff\xd8\xff\xe0",
                b"x" * 300,
            ]
        )
        | st.binary(max_size=40),
        max_size=25,
    ),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
)
def test_any_body_is_read_or_refused_with_a_form_error_and_no_writer_left_open(
    junk: list[bytes], cuts: list[int]
) -> None:
    limits = FormLimits(max_files=3, max_parts=6, max_bytes=200)
    try:
        kept, count = read(b"".join(junk), cuts, limits)
    except FormError:
        assert all(w.discarded for w in Recorder.opened)
        return
    assert len(kept) == len(Recorder.opened) == min(count, 3)
    for part in kept:
        assert len(part.data) == (part.size if part.size <= 200 else 0)


@pytest.mark.parametrize("charset", ["rot13", "zlib", "hex", "base64", "utf-16", "no-such-codec", "utf-8", "latin-1"])
def test_a_charset_parameter_that_is_no_ascii_text_encoding_is_ignored(charset: str) -> None:
    """``rot13`` and ``zlib`` are Python codecs but not text encodings (decoding with them raised a LookupError:
    a 500); UTF-16 would hide the ASCII part names. Part names and filenames are then read as UTF-8."""
    data = body([("file", "écran.png", b"photo bytes")])
    content_type = f"{CONTENT_TYPE}; charset={charset}"
    parts, count = asyncio.run(read_file_parts(content_type, chunks(data, ()), LIMITS, MemoryWriter))
    assert count == 1 and parts[0].data == b"photo bytes"
    expected = "écran.png" if charset != "latin-1" else "écran.png".encode().decode("latin-1")
    assert parts[0].filename == expected
