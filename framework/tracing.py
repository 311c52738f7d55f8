"""Traces (OpenTelemetry, the optional extra ``stageflow[otel]``): one trace follows a process from the HTTP
start through every stage, each service command, the service's handler, the reply and the next stage.

W3C trace context travels in each message's headers (``traceparent``): the publisher injects the current span,
the worker and the service SDK continue it. ``Tracing`` is an ``Observer``: a delivery's span starts when the
worker receives it (``message_received``), is named and given ``stageflow.case``, ``.case_version``,
``.stage``, ``.process_id``, ``.attempt`` when its transition commits, and ends when the delivery is handled.
Durable points (a wait, a retry's backoff, a re-send, a reply or event deadline, a fan-out's sweep, the relay):
each write with tracing on stores the writing span's context in the document (``TracedDocument.trace``), and the
due-work loop's messages carry it. Fired within ``link_after_s`` (``STAGEFLOW_TRACE_LINK_AFTER_S``) of the
transition that stored it, the next span is its child: retries and short waits stay in one trace. Later, the
next span starts a new trace with a span link to it: a trace that stays open for an hour or a day (one parent
over a long wait) is split or dropped by tail samplers and makes the root's duration meaningless in most backends.

The stage's identity goes with each message as W3C baggage (``stageflow.case_version``, ``.stage``,
``.attempt``): a service's span takes the process, case and transition from the command's taskId (verified when
the service holds the keys) and the rest from the baggage, which labels spans and is trusted for nothing else.

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
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from structlog.contextvars import bind_contextvars

from framework.document import ProcessDocument, TracedDocument
from framework.errors import ConfigurationError
from framework.observers import Observer, ParkKind
from framework.settings import tracing_enabled
from framework.state import HistoryEntry
from framework.taskid import TaskRef

__all__ = ["JsonLinesSpanExporter", "Tracing", "tracing_enabled"]

_PROPAGATOR = TraceContextTextMapPropagator()  # W3C trace context, stateless
_BAGGAGE = W3CBaggagePropagator()
_handling: ContextVar[tuple[Span, object] | None] = ContextVar("stageflow_span", default=None)
# The committed stage of this delivery's task (case version, stage, attempt), sent along as baggage.
_stage: ContextVar[dict[str, str] | None] = ContextVar("stageflow_stage", default=None)
# A due-work message fired later than ``link_after_s``: the context of the span that scheduled it, to link to.
LINK_HEADER, LINK_STATE_HEADER = "x-stageflow-link-traceparent", "x-stageflow-link-tracestate"
WAITED_HEADER = "x-stageflow-waited-s"  # how long after its transition the due-work loop published it
BAGGAGE_KEYS = {"stageflow.case_version": int, "stageflow.stage": str, "stageflow.attempt": int}


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
        "links": [{"trace_id": format(link.context.trace_id, "032x"), "span_id": format(link.context.span_id, "016x"),
                   "attributes": dict(link.attributes or {})} for link in span.links],
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

    def __init__(self, provider: TracerProvider, *, link_after_s: float = 60.0) -> None:
        self.provider = provider
        self.link_after_s = link_after_s  # a due-work message fired later than this links instead of parenting
        self._tracer = provider.get_tracer("stageflow")

    @classmethod
    def from_environment(cls, default_service: str, *, link_after_s: float = 60.0) -> Tracing:
        return cls(provider_from_environment(default_service), link_after_s=link_after_s)

    def shutdown(self) -> None:
        """Export what is pending (a process's last spans) and stop the exporters."""
        self.provider.shutdown()

    # -- the observer hooks ---------------------------------------------------------------------------------
    def publishing(self, headers: MutableMapping[str, Any]) -> None:
        _PROPAGATOR.inject(headers)  # the current span: the delivery's, a service handler's, a request's
        stage = _stage.get()
        if stage is not None:  # a committed stage's messages (its service commands) say which stage sent them
            ctx = otel_context.Context()
            for key, value in stage.items():
                ctx = otel_baggage.set_baggage(key, value, ctx)
            _BAGGAGE.inject(headers, context=ctx)

    def committing(self, doc: ProcessDocument) -> ProcessDocument:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)  # nothing without a current span (an operator's action from a plain CLI)
        if not carrier:
            return doc
        if isinstance(doc, TracedDocument):
            doc.trace = carrier
            return doc
        return TracedDocument.of(doc, carrier)

    def publishing_due(self, doc: ProcessDocument, headers: MutableMapping[str, Any], *, waited_s: float) -> None:
        if not isinstance(doc, TracedDocument) or "traceparent" not in doc.trace:
            return
        headers[WAITED_HEADER] = f"{waited_s:.3f}"
        if waited_s <= self.link_after_s:  # a retry, a short wait: the next span is the scheduling span's child
            headers.update(doc.trace)
            return
        for key in ("traceparent", "tracestate"):  # a long wait: a new trace, linked to the one that scheduled it
            headers.pop(key, None)
        headers[LINK_HEADER] = doc.trace["traceparent"]
        if "tracestate" in doc.trace:
            headers[LINK_STATE_HEADER] = doc.trace["tracestate"]

    def message_received(self, queue: str, headers: Mapping[str, Any]) -> None:
        attributes: dict[str, Any] = {"messaging.destination.name": queue}
        links: list[Link] = []
        parent = _PROPAGATOR.extract(headers, getter=_GETTER)
        waited = _GETTER.get(headers, WAITED_HEADER)
        if waited:
            with suppress(ValueError):
                attributes["stageflow.waited_s"] = float(waited[0])
        if LINK_HEADER in headers:
            carrier = {"traceparent": headers[LINK_HEADER], "tracestate": headers.get(LINK_STATE_HEADER, "")}
            linked = trace.get_current_span(_PROPAGATOR.extract(carrier, getter=_GETTER)).get_span_context()
            if linked.is_valid:
                links.append(Link(linked, {"stageflow.link": "scheduled_by"}))
        span = self._tracer.start_span(f"stageflow {queue}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attributes, links=links)
        token = otel_context.attach(trace.set_span_in_context(span))
        _handling.set((span, token))
        bind_contextvars(trace_id=format(span.get_span_context().trace_id, "032x"))

    def message_handled(self) -> None:
        handling = _handling.get()
        if handling is None:
            return
        span, token = handling
        _handling.set(None)
        _stage.set(None)
        otel_context.detach(token)  # type: ignore[arg-type]  # the token attach() returned, kept as an object
        span.end()

    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        stage, event = entry.get("stage") or "", entry.get("event", "")
        attempt = entry.get("attempt") or max(1, doc.attempts)
        span.update_name(f"{doc.case}.{stage or 'start'} {event}")
        span.set_attributes({"stageflow.case": doc.case, "stageflow.case_version": doc.case_version,
                             "stageflow.stage": stage, "stageflow.process_id": doc.process_id,
                             "stageflow.transition": doc.version, "stageflow.outcome": event,
                             "stageflow.attempt": attempt})
        _stage.set({"stageflow.case_version": str(doc.case_version), "stageflow.stage": stage,
                    "stageflow.attempt": str(attempt)})

    def process_started(self, doc: ProcessDocument) -> None:
        span = trace.get_current_span()  # a request's span, or a delivery's that starts a fan-out's child
        if span.is_recording():
            span.set_attributes({"stageflow.case": doc.case, "stageflow.case_version": doc.case_version,
                                 "stageflow.stage": doc.stage or "", "stageflow.process_id": doc.process_id,
                                 "stageflow.transition": doc.version, "stageflow.attempt": 1})

    def stage_failed(self, doc: ProcessDocument, stage: str, reason: str, *, attempt: int, retryable: bool) -> None:
        trace.get_current_span().add_event("stage failed", {"stageflow.stage": stage, "stageflow.attempt": attempt,
                                                            "stageflow.retryable": retryable, "reason": reason})

    def message_parked(self, queue: str, reason: str, *, kind: ParkKind) -> None:
        trace.get_current_span().set_status(Status(StatusCode.ERROR, f"parked: {kind}"))

    # -- for the service SDK and the gateway ------------------------------------------------------------------
    @staticmethod
    def command_attributes(api: str, ref: TaskRef | None, headers: Mapping[str, Any], *,
                           verified: bool) -> dict[str, Any]:
        """A service command's span attributes: process, case and transition from its taskId (``verified``: by
        our keys), the sending stage's case version, stage and attempt from the message's baggage."""
        attributes: dict[str, Any] = {"stageflow.api": api, "stageflow.task_verified": verified}
        if ref is not None:
            attributes.update({"stageflow.process_id": ref.process_id, "stageflow.case": ref.case,
                               "stageflow.transition": ref.transition, "stageflow.resume": ref.stage})
            if ref.item is not None:
                attributes["stageflow.item"] = ref.item
        sent = otel_baggage.get_all(_BAGGAGE.extract(headers, getter=_GETTER))
        for key, kind in BAGGAGE_KEYS.items():
            value = sent.get(key)
            if value is not None:
                try:
                    attributes[key] = kind(value)
                except ValueError:
                    continue  # not what our workers send: left out
        return attributes

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
