"""A real HTTP server on 127.0.0.1 that counts what reaches it, and answers like an idempotent API.

Every request is recorded (method, the raw request target, headers, body). The first request with a given
``Idempotency-Key`` applies its effect (``effects``); a later one with the same key gets the same answer and
applies nothing, which is what a real API that honours the key does. ``hold(prefix)`` makes the first request
whose path starts with ``prefix`` wait (after its effect is applied) until ``release()``: the moment to kill the
client that sent it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    target: str  # as sent: percent-encoding intact
    headers: dict[str, str]
    body: Any


@dataclass
class CountingServer:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    effects: dict[str, Seen] = field(default_factory=dict)
    held: threading.Event = field(default_factory=threading.Event)
    _release: threading.Event = field(default_factory=threading.Event)
    _hold_prefix: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, prefix: str) -> None:
        self._hold_prefix = prefix

    def release(self) -> None:
        self._release.set()

    def paths(self) -> list[str]:
        return [seen.target for seen in self.requests]

    def answer(self, seen: Seen) -> tuple[dict[str, Any], bool]:
        """(the reply, whether to hold it) for one request."""
        key = seen.headers.get("idempotency-key", "")
        with self._lock:
            self.requests.append(seen)
            first = self.effects.setdefault(key, seen) is seen
            number = list(self.effects).index(key) + 1
            hold = first and self._hold_prefix is not None and seen.target.startswith(self._hold_prefix)
            if hold:
                self._hold_prefix = None
        reply = {"id": str(number), "target": self.effects[key].target, "body": self.effects[key].body}
        return reply, hold


@contextmanager
def counting_server() -> Iterator[CountingServer]:
    state = CountingServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        json.loads(raw) if raw else None)
            reply, hold = state.answer(seen)
            if hold:
                state.held.set()
                state._release.wait(60)
            payload = json.dumps(reply).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client was killed while we held its request
                pass

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release()
        server.shutdown()
        server.server_close()
