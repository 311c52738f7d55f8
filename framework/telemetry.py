"""What a message carries for observers: the time it was published, read back when it is handled.

The committer stamps each message it publishes with a header (only when observers are set); the worker puts
the received stamp in a context variable at the start of the delivery's task (each delivery runs in a task
of its own, so the value is that message's). The hop latency, publish to commit, then costs no round trip.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from framework.errors import ConfigurationError
from framework.settings import tracing_enabled

if TYPE_CHECKING:
    from framework.tracing import Tracing

PUBLISHED_AT_HEADER = "x-stageflow-published-at"

_published_at: ContextVar[float | None] = ContextVar("stageflow_published_at", default=None)


def publish_headers() -> dict[str, Any]:
    """The headers of a message published now."""
    return {PUBLISHED_AT_HEADER: repr(time.time())}


def received_message(headers: Mapping[str, Any]) -> None:
    """Remember, for this delivery's task, when its message was published (None if it was not stamped)."""
    stamp = headers.get(PUBLISHED_AT_HEADER)
    try:
        _published_at.set(float(stamp.decode() if isinstance(stamp, bytes) else stamp) if stamp is not None else None)
    except ValueError:
        _published_at.set(None)  # a stamp we did not write: no hop to measure


def hop_seconds() -> float | None:
    """Seconds since the message being handled was published, if it carried a stamp."""
    published = _published_at.get()
    return None if published is None else max(0.0, time.time() - published)


def tracing_from_environment(service: str, *, link_after_s: float = 60.0) -> Tracing | None:
    """Tracing for a process named ``service`` when ``OTEL_TRACES_EXPORTER`` asks for it; only then is
    OpenTelemetry imported (``framework.tracing``, the extra ``stageflow[otel]``)."""
    if not tracing_enabled():
        return None
    try:
        from framework.tracing import Tracing  # the optional dependency: imported only when asked for
    except ImportError as exc:
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed ({exc})",
                                 hint="pip install 'stageflow[otel]', or unset OTEL_TRACES_EXPORTER") from exc
    return Tracing.from_environment(service, link_after_s=link_after_s)
