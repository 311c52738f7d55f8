"""The HTTP adapter as its own process (``stageflow http-adapter``) on RabbitMQ + PostgreSQL, a worker subprocess,
and a real HTTP server on 127.0.0.1 that counts what reaches it:

* a forged, made-up or other api's taskId is parked with its reason and never sent;
* a loopback URL is refused (the process fails with the reason) until the adapter's operator allows 127.0.0.1;
* a value interpolated into the URL path or query is percent-encoded, so it cannot change the target;
* a header that cannot be sent (CR/LF, non-latin-1) or an invalid URL fails the process with the reason, at
  once, and nothing reaches the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

from framework import Settings, Stageflow, Status, TaskIdSigner, TaskRef
from framework.blueprint import load_blueprint
from framework.broker.base import REASON_HEADER, SOURCE_HEADER, Outgoing, command_queue
from framework.messages import ServiceCommand
from tests.support import processes
from tests.support.cluster import Cluster, wait_finished
from tests.support.http_server import CountingServer, counting_server
from tests.test_bad_messages import parked_messages

pytestmark = pytest.mark.integration

PROBE = {
    "name": "http_probe", "version": 1,
    "input": {"base": {"type": "string"}, "name": {"type": "string"}, "note": {"type": "string", "default": "fine"}},
    "steps": [{
        "name": "fetch", "kind": "api_call", "retry": {"attempts": 2, "backoff_s": 0.1},
        "request": {"url": "${input.base}/files/${input.name}?v=${input.name}", "headers": {"X-Note": "${input.note}"},
                    "timeout_s": 5},
        "keep": {"target": "reply.body.target"},
    }],
    "result": {"target": "${store.target}"},
}
LOOPBACK = {"STAGEFLOW_HTTP_ALLOW_NETWORKS": "127.0.0.1"}  # the test server's address: refused unless allowed


@pytest.fixture
def server() -> Iterator[CountingServer]:
    with counting_server() as state:
        yield state


@pytest.fixture
def blueprint(tmp_path: Path) -> Path:
    path = tmp_path / "http_probe.yaml"
    path.write_text(yaml.safe_dump(PROBE))
    return path


@pytest.fixture
async def flow(settings: Settings, blueprint: Path) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=[load_blueprint(blueprint)]) as flow:
        yield flow


def _cluster(settings: Settings, tmp_path: Path, blueprint: Path, *, workers: int = 1,
             adapter_env: dict[str, str] | None = None) -> Cluster:
    return Cluster(settings, tmp_path, workers=workers, services_modules=(), cases="tests.support.cases",
                   STAGEFLOW_BLUEPRINTS=str(blueprint), http_adapters=1, adapter_env=adapter_env)


async def test_the_adapter_process_parks_forged_commands_and_sends_only_ours(
    flow: Stageflow, settings: Settings, tmp_path: Path, blueprint: Path, server: CountingServer
) -> None:
    cluster = _cluster(settings, tmp_path, blueprint, workers=0, adapter_env=LOOPBACK)
    await cluster.start()
    try:
        ref = TaskRef("p-1", "http_probe", "http", "fetch", 1)
        commands = {
            "forged": ServiceCommand(TaskIdSigner(["an-attackers-key-0123456789abcdef"]).sign(ref), "http",
                                     {"url": f"{server.url}/forged"}),
            "made up": ServiceCommand("not-a-task-id", "http", {"url": f"{server.url}/made-up"}),
            "another api's": ServiceCommand(
                flow.engine.signer.sign(TaskRef("p-1", "http_probe", "effects", "fetch", 1)),
                "http", {"url": f"{server.url}/other-api"}),
            "genuine": ServiceCommand(flow.engine.signer.sign(ref), "http", {"url": f"{server.url}/genuine"}),
        }
        await flow.broker.publish([Outgoing(command_queue("http"), name, c.to_json()) for name, c in commands.items()])
        parked = await parked_messages(settings, expected=3)
        reasons = sorted((str(p[SOURCE_HEADER]), str(p[REASON_HEADER])) for p in parked)
        assert reasons == [("command:http", "command's taskId is for another api than 'http'"),
                           ("command:http", "taskId rejected: BadSignature"),
                           ("command:http", "taskId rejected: BadSignature")], parked
        assert processes.wait_until(lambda: server.requests, 10)
        await asyncio.sleep(0.5)  # time for a wrongly accepted command to arrive too
        assert server.paths() == ["/genuine"]  # proof the adapter runs, and the only request it sent
    finally:
        codes = cluster.stop()
    assert codes == {"http-adapter-0": 0}, cluster.logs()


async def test_a_loopback_url_is_refused_until_allowed_and_path_values_are_encoded(
    flow: Stageflow, settings: Settings, tmp_path: Path, blueprint: Path, server: CountingServer
) -> None:
    name = "../admin?x=1#y"
    cluster = _cluster(settings, tmp_path, blueprint)  # no STAGEFLOW_HTTP_ALLOW_NETWORKS
    await cluster.start()
    try:
        refused = await flow.start("http_probe", {"base": server.url, "name": name})
        [doc] = await wait_finished(flow, [refused.process_id], timeout_s=30)
        assert doc.status is Status.FAILED, cluster.logs()
        assert doc.error is not None and "refused to connect to '127.0.0.1': 127.0.0.1 is a loopback address" \
            in doc.error.reason, doc.error
        assert server.requests == []
        # The operator allows the test server's address: a new adapter process with STAGEFLOW_HTTP_ALLOW_NETWORKS.
        cluster.services[0].stop()
        cluster.services[0] = processes.http_adapter({**cluster.adapter_env, **LOOPBACK}, tmp_path, "http-adapter-1")
        cluster.services[0].start()
        await cluster.wait_ready()
        allowed = await flow.start("http_probe", {"base": server.url, "name": name})
        [doc] = await wait_finished(flow, [allowed.process_id], timeout_s=30)
        assert doc.status is Status.COMPLETED, (doc.error, cluster.logs())
    finally:
        codes = cluster.stop()
    encoded = "..%2Fadmin%3Fx%3D1%23y"
    assert server.paths() == [f"/files/{encoded}?v={encoded}"]  # one request, its path and query unchanged
    assert doc.result == {"target": f"/files/{encoded}?v={encoded}"}
    assert codes == {"worker-0": 0, "http-adapter-1": 0}, cluster.logs()


async def test_a_bad_header_or_url_fails_the_process_with_the_reason(
    flow: Stageflow, settings: Settings, tmp_path: Path, blueprint: Path, server: CountingServer
) -> None:
    cluster = _cluster(settings, tmp_path, blueprint, adapter_env=LOOPBACK)
    await cluster.start()
    try:
        started = [
            await flow.start("http_probe", {"base": server.url, "name": "a", "note": "x\r\nX-Injected: yes"}),
            await flow.start("http_probe", {"base": server.url, "name": "b", "note": "snow \u2603"}),
            await flow.start("http_probe", {"base": "http://[::1", "name": "c"}),
            await flow.start("http_probe", {"base": server.url, "name": "ok", "note": "Jos\u00e9"}),
        ]
        docs = await wait_finished(flow, [d.process_id for d in started], timeout_s=30)
    finally:
        codes = cluster.stop()
    assert [d.status for d in docs] == [Status.FAILED] * 3 + [Status.COMPLETED], cluster.logs()
    reasons = [d.error.reason if d.error else "" for d in docs[:3]]
    assert "header 'X-Note': value 'x\\r\\nX-Injected: yes' holds a control character" in reasons[0], reasons
    assert "header 'X-Note': value 'snow ☃' has characters outside latin-1" in reasons[1], reasons
    assert "invalid http url 'http://[::1/files/c?v=c'" in reasons[2], reasons
    assert [d.attempts for d in docs[:3]] == [1, 1, 1]  # final errors: not retried although the step allows 2
    assert server.paths() == ["/files/ok?v=ok"]  # nothing was sent for the bad ones
    assert codes == {"worker-0": 0, "http-adapter-0": 0}, cluster.logs()
