"""``GET /cases/{case}/graph`` and ``GET /processes/{id}/graph``: read-key protected, 404 problems for what does
not exist, in the OpenAPI schema. The gateway runs on the embedded stack (the harness's in-memory broker and
SQLite store, with a worker), so its processes really run; tests/test_admin_graph.py runs it on RabbitMQ and
PostgreSQL in a browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from framework import Settings
from framework.blueprint import compile_blueprint
from framework.testing import TestEnvironment, run_cases
from gateway.app import create_app
from tests.support.cases import Jumper
from tests.support.gateway import OPERATE_KEY, READ_KEY, with_keys
from tests.test_graph import DEMO, effects

DemoCase = compile_blueprint(str(DEMO))


@pytest.fixture
async def env() -> AsyncIterator[TestEnvironment]:
    async with run_cases([DemoCase, Jumper], services={"effects": effects}) as running:
        yield running


@pytest.fixture
async def client(env: TestEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(env.flow, with_keys(Settings()))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                     headers={"X-API-Key": READ_KEY}) as http:
            yield http
    finally:
        await app.state.shutdown()


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_a_case_graph_is_laid_out_for_a_read_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/cases/graph_demo/graph")
    assert response.status_code == 200, response.text
    graph = response.json()
    assert (graph["case"], graph["version"], graph["source"], graph["process"]) == ("graph_demo", 1, "blueprint",
                                                                                   None)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["classify"]["kind"] == "condition" and nodes["review"]["rank"] == nodes["quick"]["rank"] == 2
    assert nodes["review"]["x"] != nodes["quick"]["x"]
    branch = next(e for e in graph["edges"] if e["source"] == "classify" and e["target"] == "review")
    assert (branch["kind"], branch["label"], branch["taken"]) == ("branch", "input.amount > `100`", 0)
    long_jump = next(e for e in graph["edges"] if e["source"] == "review" and e["target"] == "each_line")
    assert [rank for rank, _ in long_jump["points"]] == [3, 4]  # around the parallel level, not through it
    assert (await client.get("/cases/graph_demo/graph?version=1")).json() == graph
    code = (await client.get("/cases/jumper/graph")).json()
    assert code["source"] == "code" and code["dynamic"] is True


async def test_graphs_need_a_key_and_unknown_things_are_404_problems(client: httpx.AsyncClient) -> None:
    for path in ("/cases/graph_demo/graph", "/processes/nope/graph"):
        assert (await client.get(path, headers={"X-API-Key": ""})).status_code == 401
        assert (await client.get(path, headers={"X-API-Key": "wrong-key-0123456789abcdef-0123456789"})
                ).status_code == 401
    assert "unknown case" in _problem(await client.get("/cases/no_such_case/graph"), 404)["detail"]
    missing = _problem(await client.get("/cases/graph_demo/graph?version=7"), 404)
    assert missing["detail"] == "case 'graph_demo' version 7 is not registered here"
    assert _problem(await client.get("/cases/graph_demo/graph?version=0"), 422)["errors"][0]["field"] == "version"
    _problem(await client.get("/cases/graph_demo/graph?version=abc"), 422)
    assert _problem(await client.get("/processes/no-such-process/graph"), 404)["error"] == "ProcessNotFoundError"


async def test_a_process_graph_shows_its_path_and_where_it_is(env: TestEnvironment,
                                                              client: httpx.AsyncClient) -> None:
    done = await env.run(DemoCase, {"ref": "r", "amount": 5, "lines": [1]})
    jumped = await env.run(Jumper, {"word": "w"})
    graph = (await client.get(f"/processes/{done.process_id}/graph")).json()
    assert graph["process"] == {"process_id": done.process_id, "status": "completed", "current": "@end"}
    visited = {n["id"] for n in graph["nodes"] if n["visits"]}
    assert {"classify", "quick", "tell_a", "tell_b", "each_line", "finish", "@end"} <= visited
    assert "review" not in visited
    taken = {(e["source"], e["target"]) for e in graph["edges"] if e["taken"]}
    assert ("classify", "quick") in taken and ("classify", "review") not in taken
    assert (await client.get(f"/processes/{done.process_id}/graph", headers={"X-API-Key": OPERATE_KEY})
            ).status_code == 200

    jumper = (await client.get(f"/processes/{jumped.process_id}/graph")).json()
    assert jumper["process"]["current"] == "@end" and jumper["dynamic"] is True
    taken = {(e["source"], e["target"], e["kind"]) for e in jumper["edges"] if e["taken"]}
    assert ("first", "third", "jump") in taken and "second" not in {n["id"] for n in jumper["nodes"] if n["visits"]}


async def test_the_graph_endpoints_are_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("/cases/{case}/graph", "/processes/{process_id}/graph"):
        operation = schema["paths"][path]["get"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/GraphView"}
        assert "application/problem+json" in operation["responses"]["404"]["content"]
    assert "observed" in schema["components"]["schemas"]["EdgeKind"]["enum"]
