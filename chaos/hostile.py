"""The ``hostile`` scenario: an attacker with broker access and an HTTP client, among healthy processes.

Through the broker: unsigned or foreign-signed inner messages for live processes (complete a fan-out item,
start a child, run a stage), ``http`` commands with forged taskIds (would make a worker send a request), and
every malformed or tampered message of the ``malformed`` scenario. Through the gateway (in this process, on
the deployment's store and broker): NUL characters in paths and queries, integers past int32, a NUL in a
cancel reason or a retry's input, no key or a read key with a broken body, the API docs, ``/readyz`` without
a key. Expected: every broker attack parked with its reason, every HTTP attack a 401/403/404/422 with no
internal text, no 5xx, every healthy process completed exactly as its ledger says, workers alive throughout.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import httpx

from chaos.cases import EFFECTS_API, ChaosFlow
from framework.broker.base import INNER, Outgoing, command_queue
from framework.document import ProcessDocument
from framework.messages import ItemDone, RunStage, ServiceCommand, StartChild
from framework.signing import MessageSigner
from framework.taskid import TaskIdSigner, TaskRef
from gateway.app import create_app

if TYPE_CHECKING:
    from chaos.scenarios import Run

ROUNDS = 5
OPERATE_KEY = "chaos-hostile-operate-key-0123456789abcdef"
READ_KEY = "chaos-hostile-read-key-0123456789abcdef"
ATTACKER_KEY = "an-attackers-key-0123456789abcdef0123"
LEAKS = ("PostgreSQL", "asyncpg", "invalid byte sequence", "Traceback")
REFUSED = frozenset({401, 403, 404, 409, 422})  # 409: a retry of a process that has not failed


async def hostile(run: Run) -> None:
    from chaos.deploy import stop_task
    from chaos.scenarios import _bad_batch, _drain, flow_items

    p, dep, r, rng = run.profile, run.dep, run.result, run.rng
    run.healthy = dep.process_ids  # every process started here must complete, attacks or not
    await dep.boot()
    settings = dep.settings.model_copy(update={"api_keys_operate": [OPERATE_KEY], "api_keys_read": [READ_KEY]})
    app = create_app(dep.flow, settings)
    transport = httpx.ASGITransport(app=app)
    feeding = asyncio.create_task(dep.feed(flow_items(p.bad_healthy, "h"), in_flight=p.in_flight))
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    unexpected: list[str] = []
    parked = 0
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30,
                                     headers={"X-API-Key": OPERATE_KEY}) as client:
            for _ in range(ROUNDS):
                live = await _live(run)
                messages = _forged(live, dep.flow.engine.signer, kinds) + await _bad_batch(run, p.bad // ROUNDS, kinds)
                await dep.flow.broker.publish(messages)
                parked += len(messages)
                await _http_attacks(client, live, statuses, unexpected)
                dead = [w.name for w in dep.cluster.workers if not w.alive]
                r.expect(not dead, f"workers died during the attacks: {dead}")
                await asyncio.sleep(rng.uniform(0.1, 0.4))
            await feeding
            await _drain(run, label="after the attacks")
    finally:
        await stop_task(feeding)
        await app.state.shutdown()
    r.details.update(injected=dict(kinds), gateway_statuses=dict(sorted(statuses.items())),
                     http_attacks=sum(statuses.values()))
    r.expect(not any(code >= 500 for code in statuses), f"the gateway answered 5xx: {dict(statuses)}")
    r.expect(not unexpected, f"{len(unexpected)} HTTP attacks were not refused cleanly: {unexpected[:5]}")
    run.expected_parked = parked
    run.parked_wait_s = 30.0


async def _live(run: Run) -> list[ProcessDocument]:
    rows = await run.dep.fetch(f"SELECT doc FROM {run.dep.schema}.processes WHERE status IN ('running', 'waiting')"
                               " ORDER BY random() LIMIT 5")
    return [ProcessDocument.from_json(row["doc"]) for row in rows]


def _forged(live: list[ProcessDocument], signer: TaskIdSigner, kinds: Counter[str]) -> list[Outgoing]:
    """Inner messages and http commands for live processes, without our keys."""
    attacker, foreign = MessageSigner([ATTACKER_KEY]), TaskIdSigner([ATTACKER_KEY])
    messages: list[tuple[str, str, bytes]] = []
    for doc in live:
        pid, version, stage = doc.process_id, doc.version, doc.stage or "step_1"
        messages += [
            ("unsigned_item_done", INNER, ItemDone(pid, ChaosFlow.name, version, 0, True, {"forged": True}).to_json()),
            ("unsigned_start_child", INNER, StartChild(pid, ChaosFlow.name, version, 0, ChaosFlow.name,
                                                       {"n": 0}).to_json()),
            ("unsigned_run_stage", INNER, RunStage(pid, ChaosFlow.name, stage, version).to_json()),
            ("foreign_signed_run_stage", INNER,
             attacker.sign(RunStage(pid, ChaosFlow.name, stage, version).to_json())),
            ("forged_http_command", command_queue("http"), ServiceCommand(
                foreign.sign(TaskRef(pid, ChaosFlow.name, "http", stage, version)), "http",
                {"url": "http://127.0.0.1:9/forged"}).to_json()),
            ("http_command_with_another_apis_task_id", command_queue("http"), ServiceCommand(
                signer.sign(TaskRef(pid, ChaosFlow.name, EFFECTS_API, stage, version)), "http",
                {"url": "http://127.0.0.1:9/forged"}).to_json()),
        ]
    kinds.update(kind for kind, _, _ in messages)
    return [Outgoing(queue, f"chaos-hostile-{kind}-{uuid.uuid4().hex[:8]}", body) for kind, queue, body in messages]


async def _http_attacks(client: httpx.AsyncClient, live: list[ProcessDocument], statuses: Counter[int],
                        unexpected: list[str]) -> None:
    pid = live[0].process_id if live else str(uuid.uuid4())
    attacks: list[tuple[str, str, dict[str, object]]] = [
        ("GET", f"/processes/{pid}%00", {}), ("GET", "/processes?case=a%00b", {}),
        ("GET", "/processes?cursor=%00", {}), ("GET", f"/processes/{pid}/items?group=2147483648", {}),
        ("GET", f"/processes/{pid}/items?after=99999999999", {}), ("GET", "/jobs/a%00", {}),
        ("POST", "/schedules/a%00/pause", {}), ("POST", "/cases/a%00/processes", {"json": {}}),
        ("POST", f"/processes/{pid}/cancel", {"json": {"reason": "stop\u0000now"}}),
        ("POST", f"/processes/{pid}/retry", {"json": {"input": {"n": "\u0000"}}}),
        ("POST", f"/cases/{ChaosFlow.name}/processes", {"json": {"input": {"n": "x\u0000"}}}),
        ("POST", f"/cases/{ChaosFlow.name}/processes", {"content": b"{broken", "headers": {"X-API-Key": ""}}),
        ("POST", f"/processes/{pid}/cancel", {"content": b"{broken", "headers": {"X-API-Key": READ_KEY}}),
        ("POST", "/cases/no_such_case/processes", {"json": {"input": {}}}),
        ("GET", "/docs", {}), ("GET", "/redoc", {}), ("GET", "/openapi.json", {"headers": {"X-API-Key": ""}}),
    ]
    for method, url, options in attacks:
        response = await client.request(method, url, **options)  # type: ignore[arg-type]
        statuses[response.status_code] += 1
        leaked = any(leak in response.text for leak in LEAKS) or (
            "no_such_case" in url and ChaosFlow.name in response.text)  # the unknown-case hint lists no cases
        if response.status_code not in REFUSED or leaked:
            unexpected.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
    ready = await client.get("/readyz", headers={"X-API-Key": ""})
    statuses[ready.status_code] += 1
    if ready.json() != {"status": "ready"}:
        unexpected.append(f"/readyz without a key said {ready.text[:200]}")
