"""The first check of every request, before anything reads its body: the API key, then NUL characters.

The key comes first, so a caller without one learns nothing (not even that its body is broken): ``GET`` and
``HEAD`` need a read key, anything else an operate key; only ``/healthz``, ``/readyz``, the admin page's own
files and ``/callbacks/{token}`` (its signed token is the credential, checked by its route) need none. The
routes check their role again (and document it in the schema). A NUL character in a path or query parameter is
refused with a 422 here, once: PostgreSQL's text cannot hold one, so no query or id lookup ever sees it.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import HEADER, ApiKeys, Role
from gateway.problems import problem

_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/admin", "/admin/"})
_READ_METHODS = frozenset({"GET", "HEAD"})
_HEADER = HEADER.lower().encode()


def needs_no_key(path: str) -> bool:
    return path in _OPEN_PATHS or path.startswith(("/admin/static/", "/callbacks/"))


class Guard:
    def __init__(self, app: ASGIApp, *, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not needs_no_key(path):
            presented = dict(scope["headers"]).get(_HEADER)
            role = self.keys.role_of(presented.decode("latin-1") if presented else None)
            needed = Role.READ if scope["method"] in _READ_METHODS else Role.OPERATE
            if role == Role.NONE:
                detail = f"missing {HEADER} header" if not presented else f"unknown key in {HEADER}"
                await problem(401, detail, headers={"WWW-Authenticate": f'ApiKey header="{HEADER}"'})(
                    scope, receive, send)
                return
            if role < needed:
                await problem(403, "this API key may only read; this action needs an operate key")(
                    scope, receive, send)
                return
        if "\x00" in path or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            await problem(422, "a path or query parameter holds a NUL character", error="RequestValidationError")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)
