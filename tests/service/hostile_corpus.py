"""A generated corpus of hostile and odd uploads, each with the status the service documents for it.

Every case is a complete HTTP request body with its headers, built here from scratch (multipart bodies included,
so part headers, file names and boundaries can be exactly as odd as a case needs). ``Case.route`` is the status
``POST /v1/route`` answers, ``Case.explain`` the status of ``POST /v1/explain`` for the same request (``None``:
the case does not apply to that endpoint). For a routed ticket, ``Case.photos`` lists each photo's own outcome
(200: routed; else the status in that photo's ``error``).

The error table (``{"detail": ...}``): 400 malformed request, 401 missing or wrong API key, 413 too many bytes,
pixels or photos, 415 not a JPEG, PNG, WebP or HEIC/HEIF, 422 an image that cannot be decoded. A bad photo in a
ticket with at least one good photo is that photo's error inside a 200; a ticket none of whose photos can be read
is answered with its first photo's status. ``/v1/explain`` takes exactly one photo (400 otherwise).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

BOUNDARY = "hostile-corpus-boundary-7f3a"


class Kit(Protocol):
    """The photo helpers of ``tests/service/conftest.py`` (the ``kit`` fixture)."""

    def scene(self, width: int = 320, height: int = 240, seed: int = 0) -> Image.Image: ...

    def encode(self, image: Image.Image, fmt: str, **params: object) -> bytes: ...

    def png_header_only(self, width: int, height: int) -> bytes: ...


@dataclass(frozen=True)
class Part:
    """One multipart part; ``filename=None`` leaves the filename out, ``content_type=None`` the Content-Type."""

    data: bytes
    filename: str | None = "photo.jpg"
    content_type: str | None = "application/octet-stream"
    name: str = "file"
    disposition: str | None = None  # the whole Content-Disposition value, when a case needs it verbatim


@dataclass(frozen=True)
class Case:
    name: str
    route: int | None
    explain: int | None
    body: bytes
    headers: dict[str, str]
    photos: tuple[int, ...] | None = None  # each photo's outcome in a routed ticket
    names: tuple[str | None, ...] | None = None  # the file names a routed ticket must echo, in order
    query: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # send the body without Content-Length, in chunks
    declared_length: int | None = None  # send only the headers, declaring a body of this many bytes
    authorised: bool = True  # send the valid API key

    def expected(self, endpoint: str) -> int | None:
        return self.route if endpoint == "route" else self.explain


def multipart(parts: list[Part], boundary: str = BOUNDARY) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body and its Content-Type header, with each part exactly as given."""
    out = io.BytesIO()
    for part in parts:
        if part.disposition is not None:
            disposition = part.disposition
        elif part.filename is None:
            disposition = f'form-data; name="{part.name}"'
        else:
            disposition = f'form-data; name="{part.name}"; filename="{part.filename}"'
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode())
        if part.content_type is not None:
            out.write(f"Content-Type: {part.content_type}\r\n".encode())
        out.write(b"\r\n" + part.data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def as_json(value: object) -> tuple[bytes, dict[str, str]]:
    return json.dumps(value).encode(), {"content-type": "application/json"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- image bytes ---------------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` inserted right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + chunk + png[33:]


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0/1/2) rewritten to claim ``width`` x ``height``; the scan is unchanged."""
    data = bytearray(jpeg)
    i = 2
    while i + 9 < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 7] = height.to_bytes(2, "big")
            data[i + 7 : i + 9] = width.to_bytes(2, "big")
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF0/1/2 segment in the JPEG")


def scan_start(jpeg: bytes) -> int:
    """Offset of the first byte of entropy-coded data (just after the SOS segment)."""
    i = 2
    while i + 4 < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker == 0xDA:
            return i + 2 + length
        i += 2 + length
    raise ValueError("no SOS segment in the JPEG")


def corrupt_huffman_tables(jpeg: bytes) -> bytes:
    """``jpeg`` with every Huffman table's code counts set to 0xFF: a table no decoder can build."""
    data = bytearray(jpeg)
    i = 2
    while i + 4 < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            break
        if marker == 0xC4:
            data[i + 5 : i + 21] = b"\xff" * 16
        i += 2 + length
    return bytes(data)


def animated(kit: Kit, fmt: str, frames: int) -> bytes:
    images = [kit.scene(64, 48, seed=i) for i in range(frames)]
    return kit.encode(images[0], fmt, save_all=True, append_images=images[1:], duration=40, loop=0)


def png16(width: int = 200, height: int = 150) -> bytes:
    ramp = np.linspace(0, 65535, width * height).reshape(height, width).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, "PNG")
    return out.getvalue()


def zip_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


def exif_orientation_jpeg(kit: Kit, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return kit.encode(kit.scene(), "JPEG", quality=85, exif=exif.tobytes())


SVG = b"""<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">
<rect width="100%" height="100%" fill="red"/><script>alert(1)</script></svg>"""
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)><h1>cracked screen</h1></body></html>"


def photos_for(kit: Kit, max_bytes: int) -> dict[str, bytes]:
    """Every photo-level payload of the corpus, by name."""
    jpeg = kit.encode(kit.scene(), "JPEG", quality=85)
    png = kit.encode(kit.scene(), "PNG")
    heic = kit.encode(kit.scene(), "HEIF", quality=80)
    side = int((max_bytes / 3) ** 0.5 * 1.2)  # incompressible noise: comfortably over the byte limit as PNG
    noise = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    over_limit = kit.encode(Image.fromarray(noise), "PNG", compress_level=0)
    assert len(over_limit) > max_bytes
    flipped = bytearray(png)
    flipped[40] ^= 0xFF  # inside the first chunk after IHDR: its CRC no longer matches
    scan = scan_start(jpeg)
    return {
        "jpeg": jpeg,
        "png": png,
        "heic": heic,
        "webp": kit.encode(kit.scene(), "WEBP", quality=80),
        "empty": b"",
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "jpeg header only": jpeg[:scan],
        "jpeg with garbage scan": jpeg[:scan] + bytes(range(256)) * 8,
        "jpeg with broken huffman tables": corrupt_huffman_tables(jpeg),
        "jpeg magic then text": b"\xff\xd8\xff" + b"this is not a jpeg at all" * 10,
        "truncated png": png[: len(png) // 3],
        "png with bad crc": bytes(flipped),
        "truncated heic": heic[: len(heic) // 2],
        "png bomb 40000x40000 header": kit.png_header_only(40_000, 40_000),
        "png 10000x10000 header (over the pixel limit)": kit.png_header_only(10_000, 10_000),
        "jpeg bomb 60000x60000 header": jpeg_claiming(jpeg, 60_000, 60_000),
        "jpeg 30000x30000 header": jpeg_claiming(jpeg, 30_000, 30_000),
        "png zTXt bomb (64 MiB of text)": png_with_chunk(
            png, png_chunk(b"zTXt", b"note\0\0" + zlib.compress(b"A" * (64 * 1024 * 1024), 9))
        ),
        "animated gif, 120 frames": animated(kit, "GIF", 120),
        "animated png, 120 frames": animated(kit, "PNG", 120),
        "animated webp, 60 frames": animated(kit, "WEBP", 60),
        "tiff": kit.encode(kit.scene(), "TIFF"),
        "bmp": kit.encode(kit.scene(), "BMP"),
        "ico": kit.encode(kit.scene(64, 64), "ICO"),
        "pdf": kit.encode(kit.scene(), "PDF"),
        "svg": SVG,
        "html": HTML,
        "zip holding a jpeg": zip_of("photo.jpg", jpeg),
        "avif-branded ftyp box": b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + bytes(64),
        "cmyk jpeg": kit.encode(kit.scene().convert("CMYK"), "JPEG", quality=85),
        "progressive jpeg": kit.encode(kit.scene(), "JPEG", quality=85, progressive=True),
        "grayscale jpeg": kit.encode(kit.scene().convert("L"), "JPEG", quality=85),
        "16-bit png": png16(),
        "rgba png": kit.encode(kit.scene().convert("RGBA"), "PNG"),
        "palette png with transparency": kit.encode(
            kit.scene().convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0
        ),
        "1x1 png": kit.encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "20000x10 png": kit.encode(kit.scene(2000, 10).resize((20_000, 10)), "PNG"),
        "10x20000 jpeg": kit.encode(kit.scene(10, 2000).resize((10, 20_000)), "JPEG", quality=85),
        "exif orientation 9 (out of range)": exif_orientation_jpeg(kit, 9),
        "photo over the byte limit": over_limit,
    }


# Single-photo payloads and the status each one gets, as a ticket of one photo on either endpoint.
SINGLE_PHOTO_STATUS = {
    "jpeg": 200,
    "png": 200,
    "heic": 200,
    "webp": 200,
    "empty": 422,
    "truncated jpeg": 422,
    "jpeg header only": 422,
    "jpeg with garbage scan": 422,
    "jpeg with broken huffman tables": 422,
    "jpeg magic then text": 422,
    "truncated png": 422,
    "png with bad crc": 422,
    "truncated heic": 422,
    "png bomb 40000x40000 header": 413,
    "png 10000x10000 header (over the pixel limit)": 413,
    "jpeg bomb 60000x60000 header": 413,
    "jpeg 30000x30000 header": 413,
    "png zTXt bomb (64 MiB of text)": 422,
    "animated gif, 120 frames": 415,
    "animated png, 120 frames": 200,
    "animated webp, 60 frames": 200,
    "tiff": 415,
    "bmp": 415,
    "ico": 415,
    "pdf": 415,
    "svg": 415,
    "html": 415,
    "zip holding a jpeg": 415,
    "avif-branded ftyp box": 415,
    "cmyk jpeg": 200,
    "progressive jpeg": 200,
    "grayscale jpeg": 200,
    "16-bit png": 200,
    "rgba png": 200,
    "palette png with transparency": 200,
    "1x1 png": 200,
    "20000x10 png": 200,
    "10x20000 jpeg": 200,
    "exif orientation 9 (out of range)": 200,
    "photo over the byte limit": 413,
}


def _single(name: str, data: bytes, status: int) -> Case:
    body, headers = multipart([Part(data, filename=f"{name}.bin")])
    return Case(f"photo: {name}", status, status, body, headers, photos=(status,), names=(f"{name}.bin",))


def _named(label: str, filename: str, jpeg: bytes, echoed: str | None = None) -> Case:
    """A good photo under an odd file name; the answer names it ``echoed`` (default: as sent)."""
    body, headers = multipart([Part(jpeg, filename=filename, content_type="image/jpeg")])
    names = (filename if echoed is None else echoed,)
    return Case(f"file name: {label}", 200, 200, body, headers, photos=(200,), names=names)


def build_corpus(kit: Kit, *, max_bytes: int, max_images: int, max_request_bytes: int) -> list[Case]:
    """Every case, for a service configured with these limits."""
    photos = photos_for(kit, max_bytes)
    jpeg, png = photos["jpeg"], photos["png"]
    cases = [_single(name, photos[name], status) for name, status in SINGLE_PHOTO_STATUS.items()]

    def mp(*parts: Part) -> tuple[bytes, dict[str, str]]:
        return multipart(list(parts))

    def add(
        name: str, route: int | None, explain: int | None, request: tuple[bytes, dict[str, str]], **kw: Any
    ) -> None:
        cases.append(Case(name, route, explain, request[0], request[1], **kw))

    # Content types: the photo's type comes from its bytes, never from what the client declares.
    add("part: jpeg declared as text/plain", 200, 200, mp(Part(jpeg, content_type="text/plain")), photos=(200,))
    add("part: png declared as image/jpeg", 200, 200, mp(Part(png, "a.jpg", "image/jpeg")), photos=(200,))
    add("part: no Content-Type header", 200, 200, mp(Part(jpeg, content_type=None)), photos=(200,))
    add("part: text declared as image/jpeg", 415, 415, mp(Part(b"hello", "a.jpg", "image/jpeg")), photos=(415,))
    add("part: jpeg without a filename", 200, 200, mp(Part(jpeg, filename=None)), photos=(200,), names=(None,))
    body, headers = mp(Part(jpeg))
    add("request: no Content-Type (read as JSON)", 400, 400, (body, {}))
    add("request: Content-Type text/plain", 415, 415, (body, {"content-type": "text/plain"}))
    add("request: raw jpeg body as image/jpeg", 415, 415, (jpeg, {"content-type": "image/jpeg"}))
    add("request: urlencoded form", 415, 415, (b"file=abc", {"content-type": "application/x-www-form-urlencoded"}))
    add("request: multipart without boundary", 400, 400, (body, {"content-type": "multipart/form-data"}))
    add(
        "request: multipart with another boundary",
        400,
        400,
        (body, {**headers, "content-type": headers["content-type"] + "x"}),
    )
    add("request: multipart field 'photo', no 'file' part", 400, 400, mp(Part(jpeg, name="photo")))
    many_fields = [Part(b"x", filename=None, content_type=None, name=f"f{i}") for i in range(max_images + 150)]
    add("request: too many form fields", 413, 413, multipart([Part(jpeg), *many_fields]))
    add("request: truncated multipart body", 400, 400, (body[: len(body) // 2], headers))

    # Counts and sizes.
    add("ticket: 11 photos", 413, 413, mp(*[Part(jpeg, f"{i}.jpg") for i in range(max_images + 1)]))
    add("ticket: 11 photos as JSON", 413, 413, as_json({"images": [b64(jpeg)] * (max_images + 1)}))
    add(
        f"ticket: {max_images} photos",
        200,
        400,
        mp(*[Part(jpeg, f"{i}.jpg") for i in range(max_images)]),
        photos=(200,) * max_images,
    )
    over = max_request_bytes + 1024 * 1024
    huge = mp(Part(bytes(over), "huge.jpg"))  # well-formed multipart: only its size is wrong
    add("request: body over the request limit, declared", 413, 413, (b"", headers), declared_length=over)
    add("request: body over the request limit, chunked", 413, 413, huge, chunked=True)
    mixed = [
        ("good.jpg", jpeg),
        ("empty.jpg", b""),
        ("anim.gif", photos["animated gif, 120 frames"]),
        ("bomb.png", photos["png bomb 40000x40000 header"]),
        ("cut.jpg", photos["truncated jpeg"]),
        ("big.png", photos["photo over the byte limit"]),
        ("photo.heic", photos["heic"]),
    ]
    add(
        "ticket: good photos among bad ones",
        200,
        400,
        mp(*[Part(data, filename) for filename, data in mixed]),
        photos=(200, 422, 415, 413, 422, 413, 200),
        names=tuple(filename for filename, _ in mixed),
    )

    # JSON bodies.
    add("json: one jpeg", 200, 200, as_json({"images": [b64(jpeg)]}), photos=(200,))
    add(
        "json: data URI with line breaks",
        200,
        200,
        as_json({"images": ["data:image/png;base64," + base64.encodebytes(png).decode()]}),
        photos=(200,),
    )
    add("json: invalid base64", 422, 422, as_json({"images": ["not base64 at all!"]}), photos=(422,))
    add(
        "json: non-ASCII base64",
        422,
        422,
        as_json({"images": ["/9j/4AAQ\u00e9\u00e9" + b64(jpeg)[10:]]}),
        photos=(422,),
    )
    add("json: base64 of a text file", 415, 415, as_json({"images": [b64(b"just some notes")]}), photos=(415,))
    add("json: base64 over the byte limit", 413, 413, as_json({"images": [b64(photos["photo over the byte limit"])]}))
    add("json: malformed", 400, 400, (b'{"images": ["', {"content-type": "application/json"}))
    add("json: top-level list", 400, 400, as_json([b64(jpeg)]))
    add("json: images is a string", 400, 400, as_json({"images": b64(jpeg)}))
    add("json: images are numbers", 400, 400, as_json({"images": [1, 2]}))
    add("json: images is null", 400, 400, as_json({"images": None}))
    add("json: images are objects", 400, 400, as_json({"images": [{"data": b64(jpeg)}]}))
    add("json: no images key", 400, 400, as_json({"photos": [b64(jpeg)]}))
    add("json: empty images", 400, 400, as_json({"images": []}))
    add(
        "json: nested 10000 deep",
        400,
        400,
        (b'{"images": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", {"content-type": "application/json"}),
    )
    add(
        "json: UTF-16 encoded",
        400,
        400,
        (json.dumps({"images": [b64(jpeg)]}).encode("utf-16"), {"content-type": "application/json"}),
    )

    # File names are echoed back as given and never used as paths.
    cases += [
        _named("unicode", "écran cassé 📱 ضرر 屏幕.jpg", jpeg),
        _named("path traversal", "../../../../etc/passwd", jpeg),
        # The form parser keeps only the last component of a Windows path, as old browsers sent full paths.
        _named("absolute windows path", "C:\\Windows\\System32\\config\\SAM", jpeg, echoed="SAM"),
        _named("4096 characters", "x" * 4092 + ".jpg", jpeg),
        _named("html and quotes", "<script>alert('x')</script>;.jpg", jpeg),
        _named("empty", "", jpeg),
    ]
    rfc5987 = Part(jpeg, disposition="form-data; name=\"file\"; filename*=UTF-8''%C3%A9cran%20cass%C3%A9.jpg")
    # The form parser does not read ``filename*``: the part is a file without a name, and still a photo.
    add("file name: RFC 5987 filename* only", 200, 200, mp(rfc5987), photos=(200,), names=(None,))

    # Explanation options: checked before anything is queued.
    body, headers = mp(Part(jpeg))
    for label, query in {
        "channels=0": {"channels": "0"},
        "channels=abc": {"channels": "abc"},
        "format=xml": {"format": "xml"},
        "unknown layer": {"layers": "../../etc/passwd"},
        "erf=maybe": {"erf": "maybe"},
    }.items():
        add(f"explain option: {label}", None, 400, (body, headers), query=query)

    # Credentials.
    add("auth: no API key", 401, 401, (body, headers), authorised=False)
    add("auth: wrong API key", 401, 401, (body, {**headers, "x-api-key": "wrong"}), authorised=False)
    add(
        "auth: key as Basic credentials",
        401,
        401,
        (body, {**headers, "authorization": "Basic c2VjcmV0"}),
        authorised=False,
    )
    return cases
