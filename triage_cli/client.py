"""Routing local files through a running service (``triage predict --url``), with the standard library only.

Files are sent as multipart ``file`` parts, at most ``MAX_PER_REQUEST`` per request (one by one again when the
service finds a request too large: a lower photo limit, a smaller body limit), and each file gets the same kind of
result as in-process predict: ``{"file", "route", "confidence", "probabilities"}`` or
``{"file", "error": {"status", "message"}}``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_PER_REQUEST = 10
ROUTE_PATH = "/v1/route"
_TIMEOUT_S = 120.0


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith(ROUTE_PATH) else url + ROUTE_PATH


def _multipart(files: Sequence[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = f"triage-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for name, data in files:
        safe = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        chunks.extend((data, b"\r\n"))
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _error(file: str, status: int, message: str) -> dict[str, Any]:
    return {"file": file, "error": {"status": status, "message": message}}


def _photo_result(file: str, image: dict[str, Any]) -> dict[str, Any]:
    if "error" in image:
        return {"file": file, "error": image["error"]}
    return {"file": file, **{k: image[k] for k in ("route", "confidence", "probabilities")}}


def _post(names: Sequence[str], payload: Sequence[tuple[str, bytes]], url: str, key: str | None) -> list[dict]:
    body, content_type = _multipart(payload)
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"{}")
        except json.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict) or not isinstance(answer.get("images"), list):
            detail = answer.get("detail") if isinstance(answer, dict) else None
            return [_error(n, exc.code, str(detail or exc.reason)) for n in names]
    except urllib.error.URLError as exc:
        return [_error(n, 503, f"cannot reach {url}: {exc.reason}") for n in names]
    except TimeoutError:
        return [_error(n, 504, f"no answer from {url} within {_TIMEOUT_S:g} s") for n in names]
    images = answer.get("images", [])
    if len(images) != len(names):
        return [_error(n, 502, f"the service answered {len(images)} results for {len(names)} photos") for n in names]
    return [_photo_result(n, image) for n, image in zip(names, images, strict=True)]


def route_remote(files: Sequence[Path], url: str, api_key: str | None = None) -> list[dict[str, Any]]:
    """One result per file, in order; ``api_key`` defaults to ``$TRIAGE_API_KEY``."""
    key = api_key if api_key is not None else os.environ.get("TRIAGE_API_KEY") or None
    endpoint = _endpoint(url)
    if key is not None and not (key.isascii() and key.isprintable()):
        reason = "the API key must be printable ASCII (it travels in an HTTP header)"
        return [_error(str(path), 400, reason) for path in files]
    results: dict[int, dict[str, Any]] = {}
    readable: list[tuple[int, str, bytes]] = []
    for i, path in enumerate(files):
        try:
            readable.append((i, str(path), Path(path).read_bytes()))
        except OSError as exc:
            results[i] = _error(str(path), 404, f"cannot read file: {exc}")
    for start in range(0, len(readable), MAX_PER_REQUEST):
        chunk = readable[start : start + MAX_PER_REQUEST]
        names = [name for _, name, _ in chunk]
        answers = _post(names, [(Path(name).name, data) for _, name, data in chunk], endpoint, key)
        if len(chunk) > 1 and all(a.get("error", {}).get("status") == 413 for a in answers):
            answers = [_post([name], [(Path(name).name, data)], endpoint, key)[0] for _, name, data in chunk]
        results.update({i: answer for (i, _, _), answer in zip(chunk, answers, strict=True)})
    return [results[i] for i in range(len(files))]
