"""A request body limit, enforced before anything parses the body.

A declared ``Content-Length`` over the limit is refused at once; a body streamed without one (chunked)
is counted as it arrives and refused as soon as it passes the limit. Either way: 413, nothing read further.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import BodyTooLarge, problem


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await problem(400, "Content-Length is not a number")(scope, receive, send)
                return
            if size > self.max_bytes:
                await problem(413, f"the request body is larger than {self.max_bytes} bytes")(scope, receive, send)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)
