"""How a long-running process (worker, services) runs: on uvloop if installed, else asyncio's loop; with a
garbage collector that leaves its start-up objects alone.

uvloop's transports write to sockets and parse readiness in C; a worker spends a fair share of its time
there (many small AMQP and PostgreSQL frames per transition), so it pays when available. It stays an
optional dependency (``stageflow[fast]``): the asyncio loop is correct, just slower.
"""

from __future__ import annotations

import asyncio
import gc
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


# Collect the youngest generation every 10,000 net allocations, not 700: a transition allocates a few hundred
# short-lived objects (frames, dicts, futures) that reference counting frees anyway, so the default threshold
# ran a collection every few transitions (~3 % of a worker's profile under load).
_GC_YOUNG_THRESHOLD = 10_000


def settle_garbage_collector() -> None:
    """Before connecting: move every object made so far (modules, cases, settings) out of the collector's
    sight (``gc.freeze``), so full collections do not walk them again and again, and collect less often.
    Not later: a frozen object in a reference cycle is never collected, and connections are replaced."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, older, oldest)
