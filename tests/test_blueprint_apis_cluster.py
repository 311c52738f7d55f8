"""API definitions end to end on RabbitMQ + PostgreSQL: a worker subprocess, the HTTP adapter as its own subprocess
(holding the only copy of the secret), and a real HTTP server on 127.0.0.1 that counts requests and honours the
``Idempotency-Key`` like a real API.

Two steps name one API definition with different overrides. The adapter is SIGKILLed while the second request is
at the server (whose effect is applied, but whose reply never reaches the adapter); the command is redelivered and
the restarted adapter sends it again. An HTTP request cannot be both sent and known to have been sent across a
SIGKILL (the adapter cannot record "sent" atomically with the server's effect), so the guarantee is the key: both
attempts carry the same ``Idempotency-Key`` derived from the taskId, and the server applies one effect per key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from framework import Settings, Stageflow, Status
from framework.blueprint import load_blueprint
from tests.support import processes
from tests.support.cluster import Cluster, wait_finished
from tests.support.http_server import CountingServer, counting_server
from tests.test_blueprint_apis import TICKETS

pytestmark = pytest.mark.integration

TOKEN = "desk-token-only-in-the-adapter"


@pytest.fixture
def server() -> Iterator[CountingServer]:
    with counting_server() as state:
        yield state


async def test_two_steps_share_one_api_and_a_killed_adapter_makes_one_effect_per_task(
    settings: Settings, tmp_path: Path, server: CountingServer
) -> None:
    blueprint = copy.deepcopy(TICKETS)
    blueprint["apis"]["open_ticket"]["allowed_hosts"] = ["127.0.0.1"]
    path = tmp_path / "tickets.yaml"
    path.write_text(yaml.safe_dump(blueprint))
    constants = {"desk": server.url}
    customer = "ACME/../1"
    tickets = f"/customers/{'ACME%2F..%2F1'}/tickets"
    server.hold(f"{tickets}?notify=yes")  # the escalation: applied at the server, then held until the kill
    async with Stageflow.from_settings(settings, cases=[load_blueprint(path, constants=constants)]) as flow:
        cluster = Cluster(
            settings, tmp_path, workers=1, services_modules=(), cases="tests.support.cases",
            STAGEFLOW_BLUEPRINTS=str(path), STAGEFLOW_BLUEPRINT_CONSTANTS=json.dumps(constants), http_adapters=1,
            adapter_env={"STAGEFLOW_HTTP_SECRET_DESK_TOKEN": f"Bearer {TOKEN}",
                         "STAGEFLOW_HTTP_ALLOW_NETWORKS": "127.0.0.1",  # the server is on loopback
                         "STAGEFLOW_HTTP_HOSTS_BY_SECRET": json.dumps({"DESK_TOKEN": ["127.0.0.1"]})},
        )
        await cluster.start()
        try:
            doc = await flow.start("tickets", {"customer": customer, "topic": "billing"})
            assert processes.wait_until(server.held.is_set, 30), cluster.logs()
            cluster.services[0].kill()  # SIGKILL mid-request: the command is unacked, so RabbitMQ redelivers it
            server.release()
            cluster.services[0].start()
            [done] = await wait_finished(flow, [doc.process_id], timeout_s=60)
            history = await flow.store.history(doc.process_id)
        finally:
            codes = cluster.stop()
    assert done.status is Status.COMPLETED, (done.error, cluster.logs())
    assert codes == {"worker-0": 0, "http-adapter-0": 0}, cluster.logs()
    opened, escalated, again = server.requests
    assert [r.target for r in server.requests] == [tickets, f"{tickets}?notify=yes", f"{tickets}?notify=yes"]
    # One definition, two overrides: the first adds a field to the body, the second more fields and a query.
    assert opened.body == {"customer": customer, "topic": "billing", "priority": "low"}
    assert escalated.body == again.body == {"customer": customer, "topic": "billing", "priority": "high",
                                            "parent": done.result["first"]}
    # Two taskIds, three requests, two effects: the resent request carried the key of the first attempt.
    assert escalated.headers["idempotency-key"] == again.headers["idempotency-key"]
    assert opened.headers["idempotency-key"] != escalated.headers["idempotency-key"]
    assert len(server.effects) == 2 and done.result == {"first": "1", "escalation": "2"}
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}
    # The secret lives in the adapter's environment only: not in the document, its history, or the worker.
    assert TOKEN not in json.dumps(done.public_view()) + json.dumps(history, default=str)
    assert TOKEN not in json.dumps(cluster.workers[0].env)
