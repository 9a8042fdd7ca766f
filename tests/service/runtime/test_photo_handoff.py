"""Photos handed from the HTTP process to the worker through a directory: exact bytes, files kept for reuse or
removed, and the queue as the fallback whenever the directory cannot take a photo."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import numpy as np
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from service.http.uploads import TicketUpload, UploadedPhoto
from service.inference.intake import IntakeError
from service.runtime import photo_handoff
from service.runtime.photo_handoff import PREFIX, CloseHandoffOnStop, PhotoHandoff, shared_upload, sweep


def ticket(*photos: UploadedPhoto) -> TicketUpload:
    return TicketUpload("rid", 0.0, photos)


@pytest.fixture
def photos() -> tuple[UploadedPhoto, ...]:
    rng = np.random.default_rng(7)
    return (
        UploadedPhoto("a.jpg", rng.bytes(3_000_000)),
        UploadedPhoto("bad.jpg", error=IntakeError(422, "not base64", "bad_base64")),
        UploadedPhoto("empty.jpg", b""),
        UploadedPhoto("b.png", rng.bytes(1234)),
    )


def disk_full_at_write(monkeypatch: pytest.MonkeyPatch, call: int, written_first: int = 0) -> None:
    """``os.write`` raises ENOSPC on its ``call``-th call, after writing ``written_first`` bytes of it."""
    real_write = os.write
    calls = {"n": 0}

    def write(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == call:
            if written_first:
                real_write(fd, bytes(data[:written_first]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def idle(handoff: PhotoHandoff) -> set[Path]:
    return {path for path, _ in handoff.pool.idle}


def test_shared_photos_read_back_exactly_and_their_files_are_kept_for_reuse(tmp_path: Path, photos: tuple) -> None:
    handoff = PhotoHandoff(tmp_path)
    shared = handoff.share(ticket(*photos))
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and all(f.name.startswith(f"{PREFIX}{os.getpid()}-") for f in files)
    for original, sent in zip(photos, shared.photos, strict=True):
        assert sent.name == original.name and sent.error == original.error
        assert sent.read() == original.read()
    # What crosses the queue: a file name and a size, not the bytes, for the two readable photos.
    assert [p.shared is not None for p in shared.photos] == [True, False, False, True]
    assert all(p.data == b"" for p in shared.photos)
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files)
    handoff.release(shared)
    assert idle(handoff) == set(files)  # answered: idle, waiting for the next photos
    handoff.close()
    assert list(tmp_path.iterdir()) == []


def test_a_released_file_takes_the_next_photo_which_reads_back_exactly(tmp_path: Path, photos: tuple) -> None:
    handoff = PhotoHandoff(tmp_path)
    first = handoff.share(ticket(photos[0]))
    handoff.release(first)
    second = handoff.share(ticket(photos[3]))  # 1234 bytes into the 3 MB file
    assert second.photos[0].shared == first.photos[0].shared and idle(handoff) == set()
    assert second.photos[0].read() == photos[3].data
    assert Path(second.photos[0].shared).stat().st_size == 3_000_000  # never truncated: the size travels along


def test_idle_files_past_the_limits_are_removed(tmp_path: Path, photos: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(photo_handoff, "IDLE_FILES", 1)
    handoff = PhotoHandoff(tmp_path)
    handoff.release(handoff.share(ticket(photos[3], photos[3])))
    assert len(idle(handoff)) == 1 and set(tmp_path.iterdir()) == idle(handoff)
    monkeypatch.setattr(photo_handoff, "IDLE_FILES", 16)
    monkeypatch.setattr(photo_handoff, "IDLE_BYTES", 2_000_000)
    handoff.release(handoff.share(ticket(photos[0])))  # the pool's 1234-byte file is reused and grows to 3 MB
    assert idle(handoff) == set() and list(tmp_path.iterdir()) == []


def test_a_photo_whose_file_is_gone_is_an_error_of_its_own(tmp_path: Path, photos: tuple) -> None:
    handoff = PhotoHandoff(tmp_path)
    shared = handoff.share(ticket(photos[0]))
    handoff.release(shared)
    handoff.close()
    with pytest.raises(IntakeError) as caught:
        shared.photos[0].read()
    assert caught.value.status == 408 and caught.value.reason == "expired"


@pytest.mark.parametrize("directory", [None, "missing", "a_file"])
def test_no_usable_directory_keeps_photos_in_the_queue(tmp_path: Path, photos: tuple, directory: str | None) -> None:
    path = {None: None, "missing": tmp_path / "nope", "a_file": tmp_path / "file"}[directory]
    if directory == "a_file":
        path.write_bytes(b"")
    upload = ticket(*photos)
    assert PhotoHandoff(path).share(upload) is upload


def test_a_full_directory_falls_back_photo_by_photo(
    tmp_path: Path, photos: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC (a container's 64 MB /dev/shm) on one photo: that photo travels inline, its partial file is removed."""
    disk_full_at_write(monkeypatch, 1, written_first=100)
    shared = PhotoHandoff(tmp_path).share(ticket(photos[0], photos[3]))
    assert shared.photos[0].shared is None and shared.photos[0].data == photos[0].data
    assert shared.photos[1].shared is not None and shared.photos[1].read() == photos[3].data
    assert [f.name for f in tmp_path.iterdir()] == [Path(shared.photos[1].shared).name]
    assert "No space left" in caplog.text


def test_sweep_removes_only_the_named_processes_files(tmp_path: Path) -> None:
    for name in (f"{PREFIX}111-a", f"{PREFIX}111-b", f"{PREFIX}222-a", "unrelated"):
        (tmp_path / name).write_bytes(b"x")
    assert sweep(tmp_path, [111, 333]) == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{PREFIX}222-a", "unrelated"]
    assert sweep(None, [222]) == 0


def test_the_dependency_hands_photos_over_for_the_length_of_the_request(tmp_path: Path) -> None:
    app = FastAPI()
    app.state.photo_handoff = PhotoHandoff(tmp_path)
    seen: dict[str, object] = {}

    @app.post("/echo")
    async def echo(request: Request, upload: Annotated[TicketUpload, Depends(shared_upload)]) -> dict[str, int]:
        seen["files"] = sorted(f.name for f in tmp_path.iterdir())
        seen["bytes"] = [p.read() for p in upload.photos]
        return {"photos": len(upload.photos)}

    body = [os.urandom(50_000), os.urandom(70_000)]
    with TestClient(app) as client:
        response = client.post("/echo", files=[("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(body)])
    assert response.status_code == 200 and response.json() == {"photos": 2}
    assert len(seen["files"]) == 2 and seen["bytes"] == body
    assert set(tmp_path.iterdir()) == idle(app.state.photo_handoff) and len(idle(app.state.photo_handoff)) == 2


def test_a_directory_that_fills_up_mid_photo_keeps_the_photo_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed photo whose second chunk hits ENOSPC: what was written is read back, nothing is left behind."""
    disk_full_at_write(monkeypatch, 2)
    chunks = [os.urandom(n) for n in (70_000, 50_000, 30_000)]
    writer = PhotoHandoff(tmp_path).new_writer()
    for chunk in chunks:
        writer.write(memoryview(chunk))
    assert writer.close() == (b"".join(chunks), None)
    assert list(tmp_path.iterdir()) == []


def test_multipart_photos_stream_into_files_and_a_broken_body_leaves_none(tmp_path: Path) -> None:
    app = FastAPI()
    app.state.photo_handoff = PhotoHandoff(tmp_path)
    seen: dict[str, object] = {}

    @app.post("/echo")
    async def echo(upload: Annotated[TicketUpload, Depends(shared_upload)]) -> dict[str, int]:
        seen["inline"] = [p.data for p in upload.photos]
        seen["bytes"] = [p.read() for p in upload.photos]
        return {"photos": len(upload.photos)}

    photos = [os.urandom(300_000), os.urandom(1000)]
    boundary = "handoff-test"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n\r\n'.encode()
        + p
        + b"\r\n"
        for i, p in enumerate(photos)
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with TestClient(app) as client:
        whole = client.post("/echo", content=body + f"--{boundary}--\r\n".encode(), headers=headers)
        assert whole.status_code == 200 and seen == {"inline": [b"", b""], "bytes": photos}
        kept = idle(app.state.photo_handoff)
        broken = client.post("/echo", content=body[:-500], headers=headers)  # the second photo never ends
        assert broken.status_code == 400 and "closing boundary" in broken.json()["detail"]
    assert len(kept) == 2 and idle(app.state.photo_handoff) == kept == set(tmp_path.iterdir())


def test_stopping_the_server_removes_its_idle_files(tmp_path: Path, photos: tuple) -> None:
    handoff = PhotoHandoff(tmp_path)
    handoff.release(handoff.share(ticket(photos[0], photos[3])))
    assert len(list(tmp_path.iterdir())) == 2
    server = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(photo_handoff=handoff)))
    CloseHandoffOnStop().on_server_end(litserver=server)
    assert list(tmp_path.iterdir()) == [] and idle(handoff) == set()


def test_an_idle_file_that_cannot_be_opened_stays_idle_and_the_photo_goes_in_memory(
    tmp_path: Path, photos: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    handoff = PhotoHandoff(tmp_path)
    handoff.release(handoff.share(ticket(photos[3])))
    kept = idle(handoff)
    real_open = os.open

    def open_(path: object, flags: int, *args: int) -> int:
        if not flags & os.O_CREAT:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_)
    writer = handoff.new_writer()
    writer.write(memoryview(photos[0].data))
    assert writer.close() == (photos[0].data, None)
    assert idle(handoff) == kept == set(tmp_path.iterdir())


def test_files_of_processes_that_no_longer_exist_are_swept_at_start(tmp_path: Path, dead_pid: int) -> None:
    from service.runtime.photo_handoff import PREFIX, sweep_orphans

    alive = os.getpid()
    for pid in (dead_pid, alive):
        (tmp_path / f"{PREFIX}{pid}-0123abcd").write_bytes(b"photo")
    (tmp_path / "someone-elses-file").write_bytes(b"x")
    assert sweep_orphans(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{PREFIX}{alive}-0123abcd", "someone-elses-file"])
