"""Traces (OpenTelemetry, the optional extra ``stageflow[otel]``): one trace follows a process from the HTTP
start through every stage, each service command, the service's handler, the reply and the next stage.

W3C trace context travels in each message's headers (``traceparent``): the publisher injects the current span,
the worker and the service SDK continue it. ``Tracing`` is an ``Observer``: a delivery's span starts when the
worker receives it (``message_received``), is named and given ``stageflow.case``, ``.case_version``,
``.stage``, ``.process_id``, ``.attempt`` when its transition commits, and ends when the delivery is handled.
This module imports OpenTelemetry: nothing imports it unless ``tracing_enabled()`` (``OTEL_TRACES_EXPORTER`` is
set and not ``none``), so without the extra or the variable, tracing costs nothing.

The exporters are named by ``OTEL_TRACES_EXPORTER`` (comma-separated) and found as the SDK finds them, by their
``opentelemetry_traces_exporter`` entry points (``otlp`` with ``opentelemetry-exporter-otlp``, ``console``),
each configured by its own ``OTEL_*`` variables; ``OTEL_SERVICE_NAME`` names the process. One more,
``stageflow_jsonl``, appends one JSON object per span to ``STAGEFLOW_OTEL_FILE`` (``{pid}`` in it is the
process id): for tests and for reading a trace without a collector.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.contextvars import bind_contextvars

from framework.document import ProcessDocument
from framework.errors import ConfigurationError
from framework.observers import Observer, ParkKind
from framework.settings import tracing_enabled
from framework.state import HistoryEntry

__all__ = ["JsonLinesSpanExporter", "Tracing", "tracing_enabled"]

_PROPAGATOR = TraceContextTextMapPropagator()  # W3C trace context, stateless
_handling: ContextVar[tuple[Span, object] | None] = ContextVar("stageflow_span", default=None)


class _Headers(Getter[Mapping[str, Any]]):
    """Reads AMQP headers, whose values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        return [value.decode() if isinstance(value, bytes) else str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _Headers()


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to ``path`` (``{pid}`` is replaced by the process id)."""

    def __init__(self, path: str | None = None) -> None:
        path = path or os.environ.get("STAGEFLOW_OTEL_FILE")
        if not path:
            raise ConfigurationError("OTEL_TRACES_EXPORTER=stageflow_jsonl needs STAGEFLOW_OTEL_FILE",
                                     hint="set it to a file path, e.g. /tmp/spans-{pid}.jsonl")
        self._path = path.replace("{pid}", str(os.getpid()))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self._path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(span_record(span)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the JSON-lines exporter writes of a span (ids in hex, as in ``traceparent``)."""
    ctx, parent = span.get_span_context(), span.parent
    return {
        "name": span.name, "trace_id": format(ctx.trace_id, "032x") if ctx else None,
        "span_id": format(ctx.span_id, "016x") if ctx else None,
        "parent_id": format(parent.span_id, "016x") if parent else None, "kind": span.kind.name,
        "start": span.start_time, "end": span.end_time, "attributes": dict(span.attributes or {}),
        "resource": dict(span.resource.attributes), "status": span.status.status_code.name,
    }


def provider_from_environment(default_service: str) -> TracerProvider:
    """A tracer provider with the exporters ``OTEL_TRACES_EXPORTER`` names (see the module's docstring)."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", default_service),
                                "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)
    found = {ep.name: ep for ep in entry_points(group="opentelemetry_traces_exporter")}
    for name in (n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")):
        if not name or name == "none":
            continue
        if name == "stageflow_jsonl":
            exporter: SpanExporter = JsonLinesSpanExporter()
        elif name in found:
            exporter = found[name].load()()
        else:
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed",
                                     hint=f"install its package; installed: {[*sorted(found), 'stageflow_jsonl']}")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing(Observer):
    """Spans for the deliveries a worker handles, and trace context for what it publishes. The service SDK
    (``span``) and the gateway (``request_span``) use the same object."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("stageflow")

    @classmethod
    def from_environment(cls, default_service: str) -> Tracing:
        return cls(provider_from_environment(default_service))

    def shutdown(self) -> None:
        """Export what is pending (a process's last spans) and stop the exporters."""
        self.provider.shutdown()

    # -- the observer hooks ---------------------------------------------------------------------------------
    def publishing(self, headers: MutableMapping[str, Any]) -> None:
        _PROPAGATOR.inject(headers)  # the current span: the delivery's, a service handler's, a request's

    def message_received(self, queue: str, headers: Mapping[str, Any]) -> None:
        span = self._tracer.start_span(f"stageflow {queue}", context=_PROPAGATOR.extract(headers, getter=_GETTER),
                                       kind=SpanKind.CONSUMER, attributes={"messaging.destination.name": queue})
        token = otel_context.attach(trace.set_span_in_context(span))
        _handling.set((span, token))
        bind_contextvars(trace_id=format(span.get_span_context().trace_id, "032x"))

    def message_handled(self) -> None:
        handling = _handling.get()
        if handling is None:
            return
        span, token = handling
        _handling.set(None)
        otel_context.detach(token)  # type: ignore[arg-type]  # the token attach() returned, kept as an object
        span.end()

    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        stage, event = entry.get("stage") or "", entry.get("event", "")
        span.update_name(f"{doc.case}.{stage or 'start'} {event}")
        span.set_attributes({"stageflow.case": doc.case, "stageflow.case_version": doc.case_version,
                             "stageflow.stage": stage, "stageflow.process_id": doc.process_id,
                             "stageflow.transition": doc.version, "stageflow.outcome": event,
                             "stageflow.attempt": entry.get("attempt") or max(1, doc.attempts)})

    def stage_failed(self, doc: ProcessDocument, stage: str, reason: str, *, attempt: int, retryable: bool) -> None:
        trace.get_current_span().add_event("stage failed", {"stageflow.stage": stage, "stageflow.attempt": attempt,
                                                            "stageflow.retryable": retryable, "reason": reason})

    def message_parked(self, queue: str, reason: str, *, kind: ParkKind) -> None:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, f"parked: {kind}"))

    # -- for the service SDK and the gateway ------------------------------------------------------------------
    @contextmanager
    def span(self, name: str, headers: Mapping[str, Any], attributes: Mapping[str, Any]) -> Iterator[Span]:
        """A span continuing the trace in ``headers`` (a command's), current while the block runs."""
        parent = _PROPAGATOR.extract(headers, getter=_GETTER)
        with self._tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER,
                                                attributes=dict(attributes)) as span:
            yield span

    @contextmanager
    def request_span(self, name: str, headers: Mapping[str, Any]) -> Iterator[Span]:
        """A server span for one HTTP request (continuing a client's ``traceparent``, if it sent one)."""
        parent = _PROPAGATOR.extract(headers, getter=_GETTER)
        with self._tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            yield span
