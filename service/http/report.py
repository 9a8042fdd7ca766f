"""``GET /v1/model/report``: the served model's training report (``report.html``, written by ``triage train``).

The page is read once at start-up and served only when its sha256 is the one the model card records, so what a
reader sees is the report of the model that answers their photos. The report is self-contained (images inline, no
script) and is sent with a Content-Security-Policy that lets it fetch nothing.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

log = logging.getLogger(__name__)

REPORT_PATH = "/v1/model/report"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def load_report(card: dict[str, Any], model_dir: Path) -> tuple[bytes | None, str]:
    """The report's bytes and ``""``, or ``None`` and why it cannot be served (no report, missing, or changed)."""
    entry = card.get("report")
    if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
        return None, "this model's card lists no training report"
    path = model_dir / Path(str(entry["file"])).name  # beside the model, never elsewhere
    try:
        body = path.read_bytes()
    except OSError as exc:
        return None, f"the training report {path.name} cannot be read ({exc.strerror or exc})"
    if hashlib.sha256(body).hexdigest() != entry["sha256"]:
        return None, f"the training report {path.name} does not match the sha256 in the model card"
    return body, ""


def add_report_route(app: FastAPI, card: dict[str, Any], model_dir: Path) -> None:
    """Serve the model's report at ``REPORT_PATH`` (404 with the reason when it has none that matches its card)."""
    body, why = load_report(card, model_dir)
    if body is None and "report" in card:
        log.warning("not serving the training report: %s", why)

    async def report() -> Response:
        if body is None:
            raise HTTPException(404, why)
        return Response(body, media_type="text/html; charset=utf-8", headers=_HEADERS)

    app.add_api_route(REPORT_PATH, report, methods=["GET"])
