"""Running a long-lived component (a worker, a service) until SIGTERM or SIGINT, then stopping it cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("stageflow.runner")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_until_signalled(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> None:
    """Start, wait for SIGTERM/SIGINT, stop. A signal that arrives while starting is honoured once started."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await start()
        sig = await received
        log.info("shutting down", signal=sig.name)
        await stop()
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
