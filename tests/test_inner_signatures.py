"""A client that can publish to the inner queue but lacks the secret key changes nothing (DESIGN point 8).

Real RabbitMQ and PostgreSQL, a worker subprocess; the forgeries are published with plain aio-pika, as an
attacker with broker credentials would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aio_pika
import orjson
import pytest

from framework import Settings, Stageflow, Status, TaskIdSigner, TaskRef
from framework.broker.base import REASON_HEADER, SOURCE_HEADER, Outgoing, command_queue
from framework.messages import ItemDone, RunStage, ServiceCommand, StartChild
from framework.signing import MessageSigner
from framework.state import FanOutWait
from tests.conftest import BROKER_URL
from tests.support.cases import CASES
from tests.support.cluster import Cluster
from tests.support.fanout_cases import Spread, SpreadChild
from tests.test_bad_messages import parked_messages

pytestmark = pytest.mark.integration

ATTACKER = MessageSigner(["an-attackers-key-that-is-long-enough-0123"])


@pytest.fixture
async def flow(settings: Settings) -> AsyncIterator[Stageflow]:
    async with Stageflow.from_settings(settings, cases=[*CASES, Spread, SpreadChild]) as flow:
        yield flow


async def _wait_fan_out(flow: Stageflow, process_id: str) -> FanOutWait:
    for _ in range(300):
        doc = await flow.get(process_id)
        if isinstance(doc.waiting, FanOutWait):
            return doc.waiting
        await asyncio.sleep(0.1)
    raise AssertionError(f"process never fanned out: {doc.status} {doc.waiting}")


async def test_forged_inner_messages_are_parked_and_change_no_fan_out(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    # No `effects` service: the fan-out's two commands stay in flight, so the fan-out is live throughout.
    cluster = Cluster(settings, tmp_path, workers=1, services_modules=())
    await cluster.start()
    try:
        doc = await flow.start(Spread, {"items": 2})
        wait = await _wait_fan_out(flow, doc.process_id)
        before = await flow.get(doc.process_id)
        state_before = await flow.store.fan_out_state(doc.process_id, wait.group)
        pid, case, group = doc.process_id, Spread.name, wait.group

        done = [ItemDone(pid, case, group, i, True, {"step": i, "forged": True}).to_json() for i in (0, 1)]
        forgeries = {
            "unsigned item_done 0": done[0],
            "unsigned item_done 1": done[1],
            "item_done signed with another key": ATTACKER.sign(done[0]),
            "item_done with our signature, result altered": _altered(flow.engine.messages.sign(done[1])),
            "unsigned start_child": StartChild(pid, case, group, 0, "spread_child", {"n": 1}).to_json(),
            "unsigned run_stage": RunStage(pid, case, "children", before.version).to_json(),
        }
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            for name, body in forgeries.items():
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=name), routing_key=f"{settings.queue_prefix}.inner")
        parked = await parked_messages(settings, expected=len(forgeries))
        await asyncio.sleep(0.5)  # anything more would be a surprise: the count below says so
        parked += await parked_messages(settings, expected=1, timeout_s=0.5)

        reasons = sorted(str(m[REASON_HEADER]) for m in parked)
        assert len(parked) == len(forgeries), reasons
        assert sum(r.startswith("inner message is not signed") for r in reasons) == 4, reasons
        assert sum(r.startswith("inner message signature rejected") for r in reasons) == 2, reasons
        after = await flow.get(pid)
        assert (after.version, after.status, after.store, after.waiting) == (
            before.version, Status.WAITING, before.store, before.waiting)
        assert await flow.store.fan_out_state(pid, group) == state_before
        items = await flow.store.fan_out_items(pid, group)
        assert [item.status for item in items] == ["dispatched", "dispatched"], items
        assert cluster.workers[0].alive
    finally:
        codes = cluster.stop()
    assert codes == {"worker-0": 0}, cluster.logs()


def _altered(signed: bytes) -> bytes:
    """Our genuine signature over other content: the result rewritten after signing."""
    sig, _, rest = signed.partition(b",")
    data = orjson.loads(b"{" + rest)
    data["result"] = {"step": 1, "forged": "after signing"}
    return sig + b"," + orjson.dumps(data)[1:]



async def test_the_http_adapter_sends_a_request_only_for_a_task_id_we_signed(
    flow: Stageflow, settings: Settings, tmp_path: Path
) -> None:
    hits: list[str] = []

    class Count(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # The worker hosts the http adapter; the counting server listens on loopback, refused unless allowed.
    cluster = Cluster(settings, tmp_path, workers=1, services_modules=(), STAGEFLOW_HTTP_ALLOW_NETWORKS="127.0.0.1")
    await cluster.start()
    try:
        ref = TaskRef("p-1", "jumper", "http", "first", 1)
        commands = {
            "forged": ServiceCommand(TaskIdSigner(["an-attackers-key-0123456789abcdef"]).sign(ref), "http",
                                     {"url": f"{url}/forged"}),
            "made up": ServiceCommand("not-a-task-id", "http", {"url": f"{url}/made-up"}),
            "genuine": ServiceCommand(flow.engine.signer.sign(ref), "http", {"url": f"{url}/genuine"}),
        }
        await flow.broker.publish([Outgoing(command_queue("http"), name, c.to_json()) for name, c in commands.items()])
        # Parked: the two commands, unsent; and the genuine request's reply (there is no process p-1).
        parked = await parked_messages(settings, expected=3)
        reasons = sorted((str(p[SOURCE_HEADER]), str(p[REASON_HEADER])[:16]) for p in parked)
        assert reasons == [("command:http", "taskId rejected:"), ("command:http", "taskId rejected:"),
                           ("service", "no process 'p-1'")], parked
        for _ in range(100):  # the genuine command's request (proof the adapter runs at all)
            if hits:
                break
            await asyncio.sleep(0.1)
        assert hits == ["/genuine"]
    finally:
        codes = cluster.stop()
        server.shutdown()
    assert codes == {"worker-0": 0}, cluster.logs()
