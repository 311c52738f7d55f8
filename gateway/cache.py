"""A value read from the store at most every few seconds, shared by every request (``/stats``, ``/metrics``).

Counting a million processes takes PostgreSQL about half a second; the admin page asks every 2 s per open
tab. So the gateway keeps the last answer: fresh for ``fresh_s``; after that it is still served (at most
``max_age_s`` old) while one background read replaces it, so no request waits for the count but the first.
Concurrent misses share one read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("stageflow.gateway")


class Refreshed(Generic[T]):
    def __init__(self, load: Callable[[], Awaitable[T]], *, fresh_s: float, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self.fresh_s = fresh_s
        self.max_age_s = max(max_age_s, fresh_s)
        self._clock = clock
        self._value: tuple[float, T] | None = None  # (read at, value)
        self._reading: asyncio.Task[T] | None = None

    async def get(self) -> tuple[T, float]:
        """The value and its age in seconds."""
        now = self._clock()
        if self._value is not None:
            at, value = self._value
            if now - at < self.fresh_s:
                return value, now - at
            if now - at < self.max_age_s:
                self._read()  # in the background; this request gets the previous answer
                return value, now - at
        value = await asyncio.shield(self._read())  # a cancelled request does not cancel the shared read
        return value, 0.0

    def _read(self) -> asyncio.Task[T]:
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read_now(), name="refresh cached value")
            self._reading.add_done_callback(_log_failure)
        return self._reading

    async def _read_now(self) -> T:
        started = self._clock()
        value = await self._load()
        self._value = (started, value)
        return value

    async def close(self) -> None:
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:  # awaited callers see it; log the unawaited ones
        log.warning("reading a cached value failed", error=repr(task.exception()))
