"""The explanation page at ``GET /``: static HTML, CSS and JavaScript shipped in ``service/http/static``.

No external resources (the service runs offline); the page calls ``POST /v1/explain`` from the browser with the
API key typed into it. LitServe's own ``GET /`` ("litserve running") and ``GET /info`` are removed first: the
root belongs to the page, and ``/info`` would describe the server's internals to anyone.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from starlette.routing import BaseRoute

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE_PATH = "/"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_LITSERVE_DEFAULTS = ("/", "/info")
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _is_default(route: BaseRoute) -> bool:
    return getattr(route, "path", None) in _LITSERVE_DEFAULTS and "GET" in (getattr(route, "methods", None) or ())


def add_page_routes(app: FastAPI) -> None:
    """Replace LitServe's ``GET /`` and ``GET /info`` with the page and its two assets (``/static/<name>``)."""
    app.router.routes[:] = [route for route in app.router.routes if not _is_default(route)]

    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=ASSETS[name], headers=_HEADERS)

    app.add_api_route(PAGE_PATH, page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/static/{name}", asset, methods=["GET"], include_in_schema=False)
