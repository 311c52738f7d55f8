"""A real worker subprocess on RabbitMQ + PostgreSQL serves /metrics, /healthz and /readyz; scraped while it
runs a fan-out with a retry and a poison message, its metrics say what the run did."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework import Settings, Stageflow, Status
from framework.metrics import METRIC_NAMES
from framework.service.metrics import SERVICE_METRIC_NAMES
from tests.support.cluster import CASE_MODULES, Cluster, wait_finished
from tests.support.observe_cases import CASES, REJECT_ENV
from tests.test_rabbit_channel_errors import _close_connection_on_the_server as close_connection_on_the_server

pytestmark = pytest.mark.integration

ITEMS = 6
POISON_AFTER = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def test_a_worker_serves_metrics_that_match_the_run(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    cluster = Cluster(settings, tmp_path, workers=1, cases=f"{CASE_MODULES},tests.support.observe_cases",
                      STAGEFLOW_METRICS_PORT=str(port), STAGEFLOW_METRICS_HOST="127.0.0.1",
                      STAGEFLOW_POISON_AFTER=str(POISON_AFTER), **{REJECT_ENV: "1"})
    service_port = free_port()
    cluster.services[0].env["STAGEFLOW_METRICS_PORT"] = str(service_port)  # one port per process
    url = f"http://127.0.0.1:{port}"
    async with Stageflow.from_settings(settings, cases=CASES) as flow, httpx.AsyncClient(base_url=url) as http:
        await cluster.start()
        try:
            assert (await http.get("/healthz")).status_code == 200
            # ready once everything consumes: the hosted http adapter starts just after the inner and service
            # consumers that wait_ready counts
            deadline = asyncio.get_running_loop().time() + 10
            while (ready := (await http.get("/readyz")).json()) != {"status": "ready"}:
                assert asyncio.get_running_loop().time() < deadline, ready
                await asyncio.sleep(0.1)
            metered = await flow.start("metered", {"items": ITEMS})
            poison = await flow.start("unreadable", {"n": 1})
            done = await wait_finished(flow, [metered.process_id, poison.process_id], timeout_s=60)
            assert [d.status for d in done] == [Status.COMPLETED, Status.FAILED], cluster.logs()
            assert done[0].result == {"succeeded": ITEMS} and done[1].error.poison
            await asyncio.sleep(3 * settings.timer_interval_s)  # a due pass after the end: nothing overdue
            text = (await http.get("/metrics")).text
            # RabbitMQ drops the worker's connection: connect_robust reconnects, and the metric counts it
            worker_pid = cluster.workers[0].proc.pid  # type: ignore[union-attr]
            await close_connection_on_the_server(f"stageflow-worker-{worker_pid}")
            reconnects = 0.0
            for _ in range(100):
                after = scrape((await http.get("/metrics")).text)
                if (reconnects := value(after, "stageflow_broker_reconnects_total")) >= 1:
                    break
                await asyncio.sleep(0.1)
            assert reconnects == 1, cluster.logs()
            assert (await http.get("/readyz")).status_code == 200
            service_text = (await http.get(f"http://127.0.0.1:{service_port}/metrics")).text
            assert (await http.get(f"http://127.0.0.1:{service_port}/readyz")).status_code == 200
        finally:
            codes = cluster.stop()
    assert codes["worker-0"] == 0, cluster.logs()
    samples = scrape(text)
    exported = family_names(text)
    # every metric the module declares is exported (counters' families are named without _total)
    assert {n.removesuffix("_total") for n in METRIC_NAMES} <= exported, sorted(exported)

    m = "metered"
    # the retry: one failed attempt, one retry transition, one retry scheduled, then the stage went on
    assert value(samples, "stageflow_stage_failures_total", case=m, stage="spread") == 1
    assert value(samples, "stageflow_transitions_total", case=m, stage="spread", outcome="retry") == 1
    assert value(samples, "stageflow_retries_total", case=m, stage="spread", kind="stage") == 1
    assert value(samples, "stageflow_transitions_total", case=m, stage="spread", outcome="fan_out") == 1
    assert value(samples, "stageflow_transitions_total", case=m, stage="finish", outcome="completed") == 1
    assert value(samples, "stageflow_stage_duration_seconds_count", case=m, stage="spread") == 2
    # every transition but the first (its message came from the test's start, not a stamping worker) has a hop
    assert value(samples, "stageflow_hop_latency_seconds_count", case=m) == 2
    assert 0 < value(samples, "stageflow_hop_latency_seconds_sum", case=m) < 30
    # the fan-out: every item dispatched and finished once
    assert value(samples, "stageflow_fanout_items_started_total") == ITEMS
    assert value(samples, "stageflow_fanout_items_finished_total") == ITEMS
    # the poison message: its first run crashed, then POISON_AFTER + 1 isolated runs, then it was parked
    assert value(samples, "stageflow_isolated_runs_total") == POISON_AFTER + 1
    assert value(samples, "stageflow_parked_messages_total", queue="inner", reason="poison") == 1
    assert value(samples, "stageflow_transitions_total", case="unreadable", stage="only", outcome="failed") == 1
    # the due loop fired the retry's timer; at the end nothing is overdue and nothing is in flight
    assert value(samples, "stageflow_due_published_total") >= 1
    assert value(samples, "stageflow_due_overdue") == 0 and value(samples, "stageflow_due_lag_seconds") == 0
    assert value(samples, "stageflow_messages_in_flight") == 0
    assert value(samples, "stageflow_broker_reconnects_total") == 0
    # batched commits: metered's retry and completed, unreadable's failure (the fan-out commits on its own)
    assert value(samples, "stageflow_store_batch_size_count", kind="commit") == 3
    assert not any("process_id" in dict(labels) for _, labels in samples)  # low cardinality: no ids
    # the services process answered each item's command once
    service = scrape(service_text)
    assert value(service, "stageflow_service_commands_total", api="effects", outcome="answered") == ITEMS
    assert value(service, "stageflow_service_duration_seconds_count", api="effects") == ITEMS
    assert {n.removesuffix("_total") for n in SERVICE_METRIC_NAMES} <= family_names(service_text)
