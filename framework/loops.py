"""Which event loop a long-running process (worker, services) runs on: uvloop if installed, else asyncio's.

uvloop's transports write to sockets and parse readiness in C; a worker spends a fair share of its time
there (many small AMQP and PostgreSQL frames per transition), so it pays when available. It stays an
optional dependency (``stageflow[fast]``): the asyncio loop is correct, just slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from framework.errors import ConfigurationError


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``asyncio.Runner`` (None: asyncio's default) for a ``STAGEFLOW_EVENT_LOOP``."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "STAGEFLOW_EVENT_LOOP=uvloop, but uvloop is not installed",
                hint="pip install 'stageflow[fast]', or set STAGEFLOW_EVENT_LOOP=auto",
            ) from None
        return None
    return uvloop.new_event_loop
