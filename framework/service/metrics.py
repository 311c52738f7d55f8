"""A service process's metrics (prometheus-client): commands answered, parked or left for redelivery, by api,
and the handler's time. Its own registry, served by ``framework.metrics_server`` like a worker's."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

from framework.broker.base import Broker
from framework.metrics import STAGE_BUCKETS, LiveValues

CommandOutcome = Literal["answered", "parked", "redelivered"]

SERVICE_METRIC_NAMES = (
    "stageflow_service_commands_total", "stageflow_service_duration_seconds", "stageflow_broker_reconnects_total",
    "stageflow_messages_in_flight",
)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._commands = Counter("stageflow_service_commands", "Service commands by api and what became of them",
                                 ["api", "outcome"], registry=self.registry)
        self._duration = Histogram("stageflow_service_duration_seconds", "Time to answer one command (the effect's"
                                   " transaction and the reply's publish)", ["api"], buckets=STAGE_BUCKETS,
                                   registry=self.registry)
        self._live = LiveValues()
        self.registry.register(self._live)

    def bind(self, *, broker: Broker) -> None:
        self._live.broker = broker

    def command(self, api: str, outcome: CommandOutcome, seconds: float | None = None) -> None:
        self._commands.labels(api, outcome).inc()
        if seconds is not None:
            self._duration.labels(api).observe(seconds)
