"""The admin page: static HTML, JS and CSS (no data, so no key); the page calls the JSON API with the key.

Files are served from ``gateway/admin/`` (package data) by name from a fixed list, never by a path the
client builds. Every response carries a strict Content-Security-Policy: only this origin's script, style
and API, no inline script, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from gateway.auth import ApiKeys

ADMIN_DIR = Path(__file__).resolve().parent.parent / "admin"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "graph.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def router(keys: ApiKeys) -> APIRouter:  # keys unused: the page holds no data; the API it calls checks keys
    api = APIRouter(tags=["admin"], include_in_schema=False)

    @api.get("/admin")
    async def page() -> FileResponse:
        return FileResponse(ADMIN_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)

    @api.get("/admin/")
    async def page_slash() -> RedirectResponse:
        return RedirectResponse("/admin", status_code=308)

    @api.get("/admin/static/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404, f"no admin asset {name!r}")
        return FileResponse(ADMIN_DIR / name, media_type=media_type, headers=HEADERS)

    return api
