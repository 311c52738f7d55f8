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

    walk(None, 0)
    return "\n".join(lines)


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
        [resumed] = [s for s in workers if s["parent_id"] == service["span_id"]]
        assert STEPS.index(resumed["attributes"]["stageflow.stage"]) == STEPS.index(
            caller["attributes"]["stageflow.stage"]) + 1
    first = next(s for s in workers if s["attributes"]["stageflow.stage"] == "step_1")
    assert first["parent_id"] == root["span_id"]  # the start's message carried the request's context
    # the workers' log lines about this process carry its trace id
    lines = [r for r in worker_logs(cluster) if r.get("process_id") == process_id]
    assert len(lines) >= len(STEPS) and {r.get("trace_id") for r in lines} == {root["trace_id"]}
