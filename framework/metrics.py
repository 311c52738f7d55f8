"""Worker and service metrics (prometheus-client): an ``Observer`` that counts and times what the engine does.

Pass ``WorkerMetrics()`` to ``Stageflow(..., observers=[...])`` (the worker process does so when
``STAGEFLOW_METRICS_PORT`` is set) and serve its ``registry`` (``framework.metrics_server``). Each instance has
its own registry: no globals. Labels are low-cardinality: case, stage, outcome, queue and a reason class, never
a process id or free text. Gauges that describe a live object (messages in flight, broker reconnects) are read
when scraped, so the hot path does not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from framework.broker.base import Broker
from framework.document import ProcessDocument
from framework.observers import Observer, ParkKind
from framework.state import HistoryEntry, ResendWait, RetryWait
from framework.store.batcher import BatchingStore
from framework.telemetry import hop_seconds

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HOP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 100)

# Every metric name the workers export (deploy/ dashboards and alert rules may use only these; a test checks).
METRIC_NAMES = (
    "stageflow_processes_started_total", "stageflow_transitions_total", "stageflow_stage_duration_seconds",
    "stageflow_hop_latency_seconds", "stageflow_retries_total", "stageflow_stage_failures_total",
    "stageflow_messages_dropped_total", "stageflow_parked_messages_total", "stageflow_isolated_runs_total",
    "stageflow_messages_in_flight", "stageflow_due_lag_seconds", "stageflow_due_overdue",
    "stageflow_due_published_total", "stageflow_fanout_items_started_total",
    "stageflow_fanout_items_finished_total", "stageflow_store_batch_size", "stageflow_broker_reconnects_total",
)


class LiveValues(Collector):
    """Values read from live objects at scrape time: in-flight messages, broker reconnects."""

    def __init__(self) -> None:
        self.in_flight: Callable[[], int] | None = None
        self.broker: Broker | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily("stageflow_messages_in_flight", "Messages this worker is handling right now",
                                value=self.in_flight() if self.in_flight is not None else 0)
        yield CounterMetricFamily("stageflow_broker_reconnects", "Broker connections re-established after a loss",
                                  value=self.broker.reconnects if self.broker is not None else 0)


class WorkerMetrics(Observer):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._started = Counter("stageflow_processes_started", "Processes created", ["case"], registry=r)
        self._transitions = Counter("stageflow_transitions", "Transitions committed, by outcome (history event)",
                                    ["case", "stage", "outcome"], registry=r)
        self._stage_time = Histogram("stageflow_stage_duration_seconds", "Run time of one stage attempt",
                                     ["case", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self._hop = Histogram("stageflow_hop_latency_seconds", "From a message's publish to its transition's commit",
                              ["case"], buckets=HOP_BUCKETS, registry=r)
        self._retries = Counter("stageflow_retries", "Retries scheduled: of a stage, or of a service call",
                                ["case", "stage", "kind"], registry=r)
        self._failures = Counter("stageflow_stage_failures", "Stage attempts that raised or timed out",
                                 ["case", "stage"], registry=r)
        self._dropped = Counter("stageflow_messages_dropped", "Duplicate or stale messages dropped", ["reason"],
                                registry=r)
        self._parked = Counter("stageflow_parked_messages", "Messages parked, by queue and reason class",
                               ["queue", "reason"], registry=r)
        self._isolated = Counter("stageflow_isolated_runs", "Redelivered messages run alone (poison suspects)",
                                 registry=r)
        self._due_lag = Gauge("stageflow_due_lag_seconds", "How late the oldest due item was at the last due pass",
                              registry=r)
        self._overdue = Gauge("stageflow_due_overdue", "Items past due at the last due pass (a page at most)",
                              registry=r)
        self._due_published = Counter("stageflow_due_published", "Messages published by the due-work loop",
                                      registry=r)
        self._items_started = Counter("stageflow_fanout_items_started", "Fan-out items dispatched", registry=r)
        self._items_finished = Counter("stageflow_fanout_items_finished", "Fan-out item completions recorded",
                                       registry=r)
        self._batches = Histogram("stageflow_store_batch_size", "Store statements sent in one round trip",
                                  ["kind"], buckets=BATCH_BUCKETS, registry=r)
        self._live = LiveValues()
        r.register(self._live)
        self._children: dict[tuple[Any, ...], Any] = {}  # labels() validates and locks: cache its children

    def bind(self, *, in_flight: Callable[[], int] | None = None, broker: Broker | None = None,
             store: object = None) -> None:
        """Report the live values of a worker (``in_flight=worker.in_flight``... as a callable), its broker and
        its store's batch sizes (when the store batches)."""
        self._live.in_flight = in_flight
        self._live.broker = broker
        if isinstance(store, BatchingStore):
            store.observe_batches(self._batch)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _batch(self, kind: str, size: int) -> None:
        self._child(self._batches, kind).observe(size)

    # -- the hooks -------------------------------------------------------------------------------------------
    def process_started(self, doc: ProcessDocument) -> None:
        self._child(self._started, doc.case).inc()

    def transition_committed(self, doc: ProcessDocument, entry: HistoryEntry) -> None:
        stage = entry.get("stage") or ""
        self._child(self._transitions, doc.case, stage, entry.get("event", "")).inc()
        duration_ms = entry.get("duration_ms")
        if duration_ms is not None:
            self._child(self._stage_time, doc.case, stage).observe(duration_ms / 1000.0)
        hop = hop_seconds()
        if hop is not None:
            self._child(self._hop, doc.case).observe(hop)

    def retry_scheduled(self, doc: ProcessDocument, wait: RetryWait | ResendWait) -> None:
        if isinstance(wait, RetryWait):
            self._child(self._retries, doc.case, wait.stage, "stage").inc()
        else:
            self._child(self._retries, doc.case, wait.from_stage, "call").inc()

    def stage_failed(self, doc: ProcessDocument, stage: str, reason: str, *, attempt: int, retryable: bool) -> None:
        self._child(self._failures, doc.case, stage).inc()

    def message_dropped(self, key: str, reason: str) -> None:
        self._child(self._dropped, reason).inc()

    def message_parked(self, queue: str, reason: str, *, kind: ParkKind) -> None:
        self._child(self._parked, queue, kind).inc()

    def isolated_run(self, key: str, runs: int) -> None:
        self._isolated.inc()

    def due_work(self, published: int, *, lag_s: float, overdue: int) -> None:
        self._due_lag.set(lag_s)
        self._overdue.set(overdue)
        if published:
            self._due_published.inc(published)

    def fan_out_items(self, *, started: int, finished: int) -> None:
        if started:
            self._items_started.inc(started)
        if finished:
            self._items_finished.inc(finished)
