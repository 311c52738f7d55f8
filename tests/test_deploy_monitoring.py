"""deploy/'s Grafana dashboard and Prometheus alert rules name only metrics the code exports (and the dashboard
shows every worker metric), so a renamed metric cannot leave a silent panel or an alert that never fires."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from framework.metrics import METRIC_NAMES, WorkerMetrics
from framework.service.metrics import ServiceMetrics
from gateway.metrics import GatewayMetrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NAME = re.compile(r"\bstageflow_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry exports (a family's type says which suffixes its samples have)."""
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "stageflow-dashboard.json").read_text())
    found = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "stageflow-alerts.yml").read_text())
    found += [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    return found


def test_every_expression_names_only_exported_metrics() -> None:
    names = exported(WorkerMetrics().registry) | exported(ServiceMetrics().registry) | exported(
        GatewayMetrics().registry)
    assert all(n in names or f"{n}_count" in names for n in METRIC_NAMES)  # the declared list is the registry's
    found = expressions()
    assert len(found) >= 20
    for where, expr in found:
        used = set(NAME.findall(expr))
        assert used, f"{where}: {expr!r} names no Stageflow metric"
        assert used <= names, f"{where}: {sorted(used - names)} are not exported"


def test_the_dashboard_shows_every_worker_metric() -> None:
    shown = {name for _, expr in expressions() for name in NAME.findall(expr)}
    bases = {re.sub(r"_(bucket|count|sum)$", "", name) for name in shown}
    assert set(METRIC_NAMES) <= bases | shown, sorted(set(METRIC_NAMES) - bases - shown)


def test_alerts_cover_stuck_timers_parked_messages_failure_rate_and_due_lag() -> None:
    rules = {name: expr for name, expr in expressions() if name.startswith("Stageflow")}
    for metric in ("stageflow_due_overdue", "stageflow_parked_messages_total", "stageflow_due_lag_seconds"):
        assert any(metric in expr for expr in rules.values()), metric
    assert 'outcome="failed"' in rules["StageflowFailureRate"]
