"""One trace across a gateway, two worker subprocesses and a service subprocess on RabbitMQ + PostgreSQL:
the HTTP start, every stage, each service command's handler, each reply and the next stage, with the W3C
trace context carried in message headers. The workers and the service export with the JSON-lines exporter
(OTEL_TRACES_EXPORTER=stageflow_jsonl), the gateway (this process) with the SDK's in-memory exporter."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the extra stageflow[otel] (make install installs it)")

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from framework import Settings
from framework.document import TracedDocument
from framework.tracing import Tracing, span_record
from tests.support.cluster import Cluster, wait_finished
from tests.support.gateway import open_gateway

pytestmark = pytest.mark.integration

STEPS = ["step_1", "step_2", "step_3", "step_4", "step_5", "done"]


def exported(folder: Path) -> list[dict[str, Any]]:
    """The spans the subprocesses wrote, one JSON object a line, a file per process."""
    return [json.loads(line) for path in folder.glob("spans-*.jsonl") for line in path.read_text().splitlines()]


def worker_logs(cluster: Cluster) -> list[dict[str, Any]]:
    return [json.loads(line) for w in cluster.workers for line in w.log_path.read_text().splitlines()]


def tree(spans: list[dict[str, Any]]) -> str:
    """The spans as an indented tree, children in start order: name, process, attributes."""
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: s["start"]):
        children[span["parent_id"]].append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children[parent]:
            attrs = span["attributes"]
            where = f'{span["resource"]["service.name"]} pid {span["resource"].get("process.pid", "?")}'
            detail = " ".join(f"{k.removeprefix('stageflow.')}={v}" for k, v in sorted(attrs.items())
                              if k.startswith("stageflow.") and k not in ("stageflow.process_id",))
            lines.append(f"{'  ' * depth}{span['name']}  [{where}]  {detail}".rstrip())
            walk(span["span_id"], depth + 1)

    roots = [s["parent_id"] for s in spans if s["parent_id"] not in {t["span_id"] for t in spans}]
    for root in dict.fromkeys(roots):  # the trace's root (None), and any parent exported elsewhere
        walk(root, 0)
    return "\n".join(lines)


def gateway_tracing() -> tuple[InMemorySpanExporter, Tracing]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "stageflow-gateway", "process.pid": 0}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory, Tracing(provider)


def traced_cluster(settings: Settings, tmp_path: Path, **env: str) -> Cluster:
    return Cluster(settings, tmp_path, workers=2, OTEL_TRACES_EXPORTER="stageflow_jsonl",
                   STAGEFLOW_OTEL_FILE=str(tmp_path / "spans-{pid}.jsonl"), STAGEFLOW_LOG_JSON="true",
                   STAGEFLOW_LOG_LEVEL="debug", **env)


def assert_stage_attributes(span: dict[str, Any], process_id: str, case: str, stage: str, attempt: int) -> None:
    """Every span of a stage (a worker's delivery, a service's command) names its case, version, stage, process
    and attempt."""
    attrs = span["attributes"]
    assert (attrs.get("stageflow.case"), attrs.get("stageflow.case_version"), attrs.get("stageflow.stage"),
            attrs.get("stageflow.process_id"), attrs.get("stageflow.attempt")) == (
        case, 1, stage, process_id, attempt), span


async def test_one_trace_follows_a_process_across_gateway_workers_and_a_service(
    settings: Settings, tmp_path: Path
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "stageflow-gateway", "process.pid": 0}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    cluster = Cluster(settings, tmp_path, workers=2, OTEL_TRACES_EXPORTER="stageflow_jsonl",
                      STAGEFLOW_OTEL_FILE=str(tmp_path / "spans-{pid}.jsonl"), STAGEFLOW_LOG_JSON="true",
                      STAGEFLOW_LOG_LEVEL="debug")
    async with open_gateway(settings, tracing=Tracing(provider)) as gw:
        await cluster.start()
        try:
            response = await gw.client.post("/cases/five_calls/processes", json={"input": {"n": 1}})
            assert response.status_code == 201, response.text
            process_id = response.json()["process_id"]
            [doc] = await wait_finished(gw.flow, [process_id], timeout_s=60)
            assert doc.status.value == "completed", cluster.logs()
        finally:
            codes = cluster.stop()  # SIGTERM: each process exports its last spans before it exits
    assert set(codes.values()) == {0}, cluster.logs()
    spans = [span_record(s) for s in memory.get_finished_spans()] + exported(tmp_path)
    [root] = [s for s in spans if s["name"] == "POST /cases/{case}/processes"]
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    print(tree(trace))  # the span tree, for people (pytest -s)

    by_id = {s["span_id"]: s for s in trace}
    assert [s for s in trace if s["parent_id"] not in by_id] == [root]  # one tree, rooted at the HTTP start
    workers = [s for s in trace if s["resource"]["service.name"] == "stageflow-worker"]
    services = [s for s in trace if s["resource"]["service.name"] == "stageflow-services"]
    assert [s["attributes"]["stageflow.stage"] for s in sorted(workers, key=lambda s: s["start"])] == STEPS
    for span in workers:
        attrs = span["attributes"]
        assert (attrs["stageflow.case"], attrs["stageflow.case_version"], attrs["stageflow.process_id"],
                attrs["stageflow.attempt"]) == ("five_calls", 1, process_id, 1)
    assert len({s["resource"]["process.pid"] for s in workers}) == 2  # both workers took part
    assert len(services) == 5 and {s["name"] for s in services} == {"service effects"}
    for service in services:  # each command's handler is a child of the stage that called, and its reply's
        caller = by_id[service["parent_id"]]  # stage is a child of the handler
        assert caller["resource"]["service.name"] == "stageflow-worker"
        assert caller["attributes"]["stageflow.outcome"] == "call"
        assert_stage_attributes(service, process_id, "five_calls", caller["attributes"]["stageflow.stage"], 1)
        assert service["attributes"]["stageflow.transition"] == caller["attributes"]["stageflow.transition"]
        assert service["attributes"]["stageflow.task_verified"] is False  # this services process holds no keys
        [resumed] = [s for s in workers if s["parent_id"] == service["span_id"]]
        assert STEPS.index(resumed["attributes"]["stageflow.stage"]) == STEPS.index(
            caller["attributes"]["stageflow.stage"]) + 1
    first = next(s for s in workers if s["attributes"]["stageflow.stage"] == "step_1")
    assert first["parent_id"] == root["span_id"]  # the start's message carried the request's context
    # the workers' log lines about this process carry its trace id
    lines = [r for r in worker_logs(cluster) if r.get("process_id") == process_id]
    assert len(lines) >= len(STEPS) and {r.get("trace_id") for r in lines} == {root["trace_id"]}


async def test_a_retry_stays_in_the_trace_and_a_long_wait_starts_a_trace_linked_to_it(
    settings: Settings, tmp_path: Path
) -> None:
    """traced_timers: a call, a 5 s durable wait, a stage that fails once and is retried after 0.2 s, a call.
    With STAGEFLOW_TRACE_LINK_AFTER_S=2.5 the wait (fired by the due-work loop) starts a new trace linked to the
    span that scheduled it; the retry's backoff (fired by the due-work loop too) stays in that trace as a child."""
    memory, tracing = gateway_tracing()
    cluster = traced_cluster(settings, tmp_path, STAGEFLOW_TRACE_LINK_AFTER_S="2.5")
    async with open_gateway(settings, tracing=tracing) as gw:
        await cluster.start()
        try:
            response = await gw.client.post("/cases/traced_timers/processes", json={"input": {"wait_s": 5}})
            assert response.status_code == 201, response.text
            process_id = response.json()["process_id"]
            [doc] = await wait_finished(gw.flow, [process_id], timeout_s=60)
            assert doc.status.value == "completed", cluster.logs()
            assert isinstance(doc, TracedDocument) and doc.trace["traceparent"].startswith("00-")
        finally:
            codes = cluster.stop()
    assert set(codes.values()) == {0}, cluster.logs()
    spans = [span_record(s) for s in memory.get_finished_spans()] + exported(tmp_path)
    [root] = [s for s in spans if s["name"] == "POST /cases/{case}/processes"]
    first = [s for s in spans if s["trace_id"] == root["trace_id"]]
    [waited] = [s for s in first if s["name"] == "traced_timers.pause wait"]
    [linked_root] = [s for s in spans if any(link["span_id"] == waited["span_id"] for link in s["links"])]
    second = [s for s in spans if s["trace_id"] == linked_root["trace_id"]]
    print(tree(first))  # the span trees, for people (pytest -s)
    print(f"--- linked to {waited['name']} ({waited['span_id']}):")
    print(tree(second))

    assert root["attributes"]["stageflow.process_id"] == process_id  # the request's span names what it started
    for spans_of, top in ((first, root), (second, linked_root)):  # two trees, each with one root
        by_id = {s["span_id"]: s for s in spans_of}
        assert [s for s in spans_of if s["parent_id"] not in by_id] == [top]
    assert linked_root["trace_id"] != root["trace_id"] and linked_root["parent_id"] is None
    assert linked_root["links"] == [{"trace_id": root["trace_id"], "span_id": waited["span_id"],
                                     "attributes": {"stageflow.link": "scheduled_by"}}]
    assert linked_root["attributes"]["stageflow.waited_s"] >= 4.5  # the 5 s wait, fired by the due-work loop

    def chain(spans_of: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        ordered = sorted(spans_of, key=lambda s: s["start"])
        return [(s["resource"]["service.name"], s["attributes"]["stageflow.stage"],
                 s["attributes"]["stageflow.attempt"]) for s in ordered if s is not root]

    worker, service = "stageflow-worker", "stageflow-services"
    assert chain(first) == [(worker, "ask", 1), (service, "ask", 1), (worker, "pause", 1)]
    assert chain(second) == [(worker, "flaky", 1), (worker, "flaky", 2), (service, "flaky", 2), (worker, "done", 1)]
    for span in first + second:
        if span is not root:
            attrs = span["attributes"]
            assert_stage_attributes(span, process_id, "traced_timers", attrs["stageflow.stage"],
                                    attrs["stageflow.attempt"])
    failed, retried = sorted((s for s in second if s["attributes"]["stageflow.stage"] == "flaky"
                              and s["resource"]["service.name"] == worker), key=lambda s: s["start"])
    assert failed["name"] == "traced_timers.flaky retry" and retried["name"] == "traced_timers.flaky call"
    assert retried["parent_id"] == failed["span_id"]  # the backoff, fired by the due-work loop, is a child
    assert 0.1 <= retried["attributes"]["stageflow.waited_s"] < 2.5
