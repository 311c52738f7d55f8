"""The chaos scenarios. Each runs on its own deployment (:mod:`chaos.deploy`) and fills a ``Result``: seven on
the tests' RabbitMQ and PostgreSQL, and two on servers they start for themselves (:mod:`chaos.cluster`: a
RabbitMQ node killed, a PostgreSQL failover).

Nothing in a scenario retries or republishes on the framework's behalf: anything lost stays lost and
shows. The figures are measured the same way for all (``measure``):

* **lost**: a started process not completed/failed/cancelled when its drain time was up;
* **applied twice**: version-changing ledger rows beyond one per (process, old version) plus ``effects``
  rows beyond one per (process, step), over the whole schema;
* the processes expected to complete are also audited against their case's exact ledger shape
  (``tests/support/ledger.py``): commits in order, each effect once, history versions;
* **parked**: messages on ``<prefix>.parked`` at the end, with their reasons.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from chaos import servers
from chaos.cases import CHAOS_FLOW, CHAOS_FLOW_CALLS, CHAOS_SLOW, EFFECTS_API, ChaosFlow, ChaosSlow
from chaos.deploy import BROKER_URL, Deployment, Parked, Servers, say, shuffled, stop_task, with_query
from chaos.report import Result
from framework.broker.base import INNER, SERVICE, Outgoing, command_queue
from framework.document import ProcessDocument
from framework.messages import ItemDone, RunStage, ServiceCommand, ServiceReplyMessage
from framework.signing import MessageSigner
from framework.state import ResendWait, ServiceWait
from framework.taskid import TaskIdSigner, TaskRef
from tests.support.failure_cases import Killer
from tests.support.ledger import Expected, audit, doubled_commits, doubled_effects, queue_depth

LOST_RACE = "transition lost the race"


@dataclass(frozen=True)
class Profile:
    name: str
    # 1. worker SIGKILLs
    kill_processes: int
    kill_workers: int
    worker_kills: int
    kill_pause_s: tuple[float, float]
    # 2. RabbitMQ and PostgreSQL restarts ("restart": stop_app/start_app; "drop": close_all_connections)
    restart_processes: int
    rabbit_mode: str
    # 3. a frozen worker
    frozen_processes: int
    # 4. duplicated, reordered and stale messages
    dup_processes: int
    dup_docs_per_round: int
    # 5. poison messages
    poison: int
    poison_healthy: int
    # 6. malformed and tampered messages
    bad: int
    bad_healthy: int
    # 7./8. a RabbitMQ node killed, a PostgreSQL failover (each on servers of its own)
    cluster_processes: int
    cluster_in_flight: int
    # every scenario
    in_flight: int  # processes kept unfinished while starting
    drain_timeout_s: float  # after the faults, how long every process has to finish
    scenario_limit_s: float  # hard bound on one scenario


FULL = Profile(
    name="full", kill_processes=1000, kill_workers=4, worker_kills=24, kill_pause_s=(0.3, 1.5),
    restart_processes=400, rabbit_mode="restart", frozen_processes=150, dup_processes=300, dup_docs_per_round=8,
    poison=50, poison_healthy=300, bad=200, bad_healthy=300, cluster_processes=300, cluster_in_flight=60,
    in_flight=150, drain_timeout_s=150.0,
    scenario_limit_s=300.0,
)
QUICK = Profile(
    name="quick", kill_processes=150, kill_workers=3, worker_kills=6, kill_pause_s=(0.3, 1.2),
    restart_processes=100, rabbit_mode="restart", frozen_processes=45, dup_processes=80, dup_docs_per_round=6,
    poison=5, poison_healthy=60, bad=200, bad_healthy=80, cluster_processes=90, cluster_in_flight=30,
    in_flight=100, drain_timeout_s=90.0,
    scenario_limit_s=150.0,
)
# The short version inside ``make test`` (tests/test_chaos.py): RabbitMQ's connections are dropped
# rather than the node restarted (a node restart takes 5-15 s on its own).
TEST = Profile(
    name="test", kill_processes=50, kill_workers=3, worker_kills=4, kill_pause_s=(0.3, 0.8),
    # 90: a third of them must still be running when PostgreSQL is stopped, however fast the workers are
    restart_processes=90, rabbit_mode="drop", frozen_processes=48, dup_processes=30, dup_docs_per_round=4,
    poison=2, poison_healthy=20, bad=40, bad_healthy=20, cluster_processes=60, cluster_in_flight=20,
    in_flight=60, drain_timeout_s=60.0,
    scenario_limit_s=90.0,
)
PROFILES = {p.name: p for p in (FULL, QUICK, TEST)}


@dataclass
class Run:
    """What a scenario hands to ``measure``: who should complete, who should fail, what should be parked."""

    dep: Deployment
    result: Result
    profile: Profile
    rng: random.Random
    expected: Expected = CHAOS_FLOW
    healthy: list[str] = field(default_factory=list)  # processes that must complete
    poison: list[str] = field(default_factory=list)  # processes that must end failed with error.poison
    expected_parked: int = 0  # parked messages expected (exactly, unless ``poison``)
    parked_wait_s: float = 10.0
    fault_at: float | None = None  # epoch seconds of the fault (the cluster scenarios)


def flow_items(count: int, key: str) -> list[tuple[str, dict[str, Any], str]]:
    return [(ChaosFlow.name, {"n": n}, f"{key}-{n}") for n in range(count)]


async def _drain(run: Run, *, label: str) -> None:
    """Wait for every started process to finish; the time it took is the scenario's drain time."""
    began = time.monotonic()
    if await run.dep.wait_finished(run.profile.drain_timeout_s, progress=f"{run.result.name} drain"):
        run.result.drain_s = round(time.monotonic() - began, 2)
    else:
        run.result.problems.append(f"{label}: not every process finished within {run.profile.drain_timeout_s:g} s")


async def _wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.2
) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout_s``."""
    began = time.monotonic()
    while True:
        if await predicate():
            return round(time.monotonic() - began, 2)
        if time.monotonic() - began > timeout_s:
            return None
        await asyncio.sleep(interval_s)


async def until_busy(run: Run, started: int, last: int) -> None:
    """Wait until ``started`` processes are started and the ``last`` of them are about halfway through
    (processes advance together, so counting finished ones would find them all done at once)."""
    per_process = len(run.expected.history)  # history rows of a finished process

    async def ready() -> bool:
        halfway = (started - last) * per_process + last * per_process // 2
        return len(run.dep.process_ids) >= started and await run.dep.transitions() >= halfway

    await _wait_for(ready, 120)


# -- 1. worker SIGKILLs -----------------------------------------------------------------------------------

FRESH_PER_KILL = 5  # processes started right before each kill, so every kill lands on running work


async def worker_kills(run: Run) -> None:
    p, dep, r, rng = run.profile, run.dep, run.result, run.rng
    run.healthy = dep.process_ids  # every process started here must complete
    await dep.boot()
    workers = list(dep.cluster.workers)
    victims = [rng.choice(workers) for _ in range(p.worker_kills)]
    victims.insert(rng.randrange(len(victims) // 3, 2 * len(victims) // 3 + 1), dep.services)  # once, mid-run
    left = [len(victims)]
    unexpected = dep.supervise([*workers, dep.services])  # restarts and counts deaths we did not cause
    feeding = asyncio.create_task(dep.feed(flow_items(p.kill_processes, "k"), in_flight=p.in_flight,
                                           held_back=lambda: FRESH_PER_KILL * left[0]))
    kills: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        for victim in victims:
            await asyncio.sleep(rng.uniform(*p.kill_pause_s))
            await dep.start_next(FRESH_PER_KILL)
            unfinished = await dep.unfinished()
            victim.kill()  # SIGKILL and reap, then restart at once (no await between: the supervisor
            victim.start()  # never sees it dead)
            left[0] -= 1
            kills.append({"victim": victim.name, "at_s": round(time.monotonic() - began, 2), "unfinished": unfinished})
        await feeding
        await _drain(run, label="after the kills")
    finally:
        await stop_task(feeding)
    r.kills = len(kills)
    r.details.update(
        workers=len(workers), worker_kills=sum(k["victim"] != dep.services.name for k in kills),
        service_kills=sum(k["victim"] == dep.services.name for k in kills),
        min_unfinished_at_kill=min(k["unfinished"] for k in kills), unexpected_deaths=unexpected.deaths,
    )
    r.expect(r.details["min_unfinished_at_kill"] > 0, "a kill landed when no process was running")
    r.expect(not unexpected.deaths, f"subprocesses died without being killed: {unexpected.deaths}")


# -- 2. RabbitMQ and PostgreSQL restarts -------------------------------------------------------------------


async def restarts(run: Run) -> None:
    p, dep, r = run.profile, run.dep, run.result
    run.healthy = dep.process_ids  # every process started here must complete
    missing = servers.missing_tools()
    if missing:
        raise servers.ServerControlError(f"cannot restart the servers here: {', '.join(missing)} not found")
    await dep.boot()
    total = p.restart_processes
    third = total // 3
    reserve = [total - third]  # released a third at a time, so each restart lands on running processes
    unexpected = dep.supervise([*dep.cluster.workers, dep.services])
    feeding = asyncio.create_task(dep.feed(flow_items(total, "r"), in_flight=p.in_flight,
                                           held_back=lambda: reserve[0]))

    async def busy(started: int) -> None:
        await until_busy(run, started, third)

    async def recovered(step: str) -> None:
        """Consumers back and processes finishing again after a restart: how long each took."""
        back = await _wait_for(_consumers_back(dep), 90)
        before = await dep.finished()

        async def moving() -> bool:
            return await dep.finished() > before or before >= len(dep.process_ids)

        again = await _wait_for(moving, 90)
        r.details[f"{step}_consumers_back_s"] = back
        r.details[f"{step}_progress_again_s"] = again
        r.expect(back is not None, f"after the {step}: workers/services did not consume again within 90 s")
        r.expect(again is not None, f"after the {step}: no process finished within 90 s")

    try:
        # RabbitMQ, in the middle of the first third
        await busy(third)
        r.details["rabbit_at_unfinished"] = await dep.unfinished()
        if p.rabbit_mode == "restart":
            stopped = await servers.rabbit_stop()
            await asyncio.sleep(2.0)  # down for a while: every client fails to reconnect at least once
            started = await servers.rabbit_start()
            r.details["rabbit"] = "stop_app/start_app"
            r.details["rabbit_stop_s"] = round(stopped.seconds, 1)
            r.details["rabbit_start_s"] = round(started.seconds, 1)
        else:
            await servers.rabbit_drop_connections()
            r.details["rabbit"] = "close_all_connections"
        reserve[0] = total - 2 * third
        await recovered("rabbit")

        # PostgreSQL, in the middle of the second third: stopped like a crash (-m immediate), then started
        await busy(2 * third)
        r.details["pg_at_unfinished"] = await dep.unfinished()
        down = time.monotonic()
        await servers.pg_stop_immediate()
        await asyncio.sleep(2.0)
        await servers.pg_start()
        r.details["pg_down_s"] = round(time.monotonic() - down, 1)
        reserve[0] = 0
        await recovered("pg")

        await feeding
        await _drain(run, label="after the restarts")
    finally:
        await stop_task(feeding)
    r.details["unexpected_deaths"] = unexpected.deaths
    r.expect(not unexpected.deaths, f"subprocesses died without being killed: {unexpected.deaths}")
    r.expect(r.details["rabbit_at_unfinished"] > 0 and r.details["pg_at_unfinished"] > 0,
             "a restart landed when no process was running")


def _consumers_back(dep: Deployment) -> Callable[[], Awaitable[bool]]:
    workers = len(dep.cluster.workers)

    async def check() -> bool:
        try:
            return (await dep.consumers("inner") >= workers and await dep.consumers("service") >= workers
                    and await dep.consumers(f"command.{EFFECTS_API}") >= 1)
        except Exception:  # noqa: BLE001 - RabbitMQ still booting
            return False

    return check


# -- 3. a frozen worker -----------------------------------------------------------------------------------

STAGE_SECONDS = 0.8
HEARTBEAT_S = 3
FREEZE_BURST_PER_WORKER = 8


async def frozen_worker(run: Run) -> None:
    p, dep, r = run.profile, run.dep, run.result
    run.healthy = dep.process_ids  # every process started here must complete
    run.expected = CHAOS_SLOW
    # The frozen one: a short AMQP heartbeat, so RabbitMQ gives up on it quickly and requeues its
    # messages; DEBUG logs, to show the engine refusing its late writes.
    frozen = dep.add_worker(
        "worker-frozen", STAGEFLOW_BROKER_URL=with_query(BROKER_URL, heartbeat=str(HEARTBEAT_S)),
        STAGEFLOW_LOG_LEVEL="DEBUG",
    )
    workers = len(dep.cluster.workers)
    await dep.boot()
    items = [(ChaosSlow.name, {"n": n, "seconds": STAGE_SECONDS}, f"f{n}") for n in range(p.frozen_processes)]
    burst = [min(FREEZE_BURST_PER_WORKER * workers, len(items) // 2)]  # started right before the freeze
    # Few enough in flight that the others take over the frozen worker's stages at once.
    feeding = asyncio.create_task(dep.feed(items, in_flight=min(p.in_flight, 8 * workers), held_back=lambda: burst[0]))
    try:
        async def frozen_is_working() -> bool:
            return _count_lines(frozen, "transition") >= 3

        r.expect(await _wait_for(frozen_is_working, 60) is not None, "the frozen worker never ran a stage")
        # A burst of processes, spread over the workers by RabbitMQ: the frozen one is surely in the
        # middle of several slow stages when it stops.
        count, burst[0] = burst[0], 0
        await dep.start_next(count)
        await asyncio.sleep(STAGE_SECONDS / 2)
        lost_before = _count_lines(frozen, LOST_RACE)
        frozen.signal(signal.SIGSTOP)
        stopped = time.monotonic()

        async def frozen_dropped() -> bool:
            return await dep.consumers("inner") < workers

        closed = await _wait_for(frozen_dropped, 60, interval_s=0.5)
        r.details["connection_closed_after_s"] = closed
        r.expect(closed is not None, "RabbitMQ did not close the frozen worker's connection within 60 s")
        # Its unacked messages are requeued; let the others run those stages and commit them.
        await asyncio.sleep(3 * STAGE_SECONDS + 1.0)
        frozen.signal(signal.SIGCONT)
        r.details["frozen_s"] = round(time.monotonic() - stopped, 1)
        back = await _wait_for(_consumers_back(dep), 60)
        r.details["frozen_reconnected_s"] = back
        r.expect(back is not None, "the frozen worker did not reconnect after SIGCONT")
        # Its stages resume where SIGSTOP left them and then try to commit: wait for those late writes (a busy
        # machine may take seconds), rather than a fixed pause.

        async def late_write_refused() -> bool:
            return _count_lines(frozen, LOST_RACE) > lost_before

        await _wait_for(late_write_refused, 15 + 2 * STAGE_SECONDS, interval_s=0.2)
        refused = _count_lines(frozen, LOST_RACE) - lost_before
        r.details["late_writes_refused"] = refused
        r.expect(refused >= 1, f"no '{LOST_RACE}' line in {frozen.log_path}: the frozen worker made no late write")
        await feeding
        await _drain(run, label="after the freeze")
    finally:
        await stop_task(feeding)
        frozen.signal(signal.SIGCONT)


def _count_lines(worker: Any, text: str) -> int:
    try:
        return sum(1 for line in worker.log_path.read_text(errors="replace").splitlines() if text in line)
    except OSError:
        return 0


# -- 4. duplicated, reordered and stale messages ----------------------------------------------------------


async def duplicates(run: Run) -> None:
    p, dep, r = run.profile, run.dep, run.result
    run.healthy = dep.process_ids  # every process started here must complete
    await dep.boot()
    feeding = asyncio.create_task(dep.feed(flow_items(p.dup_processes, "d"), in_flight=p.in_flight))
    injected: Counter[str] = Counter()

    async def inject_all_along() -> None:
        while True:
            await _inject_duplicates(run, injected, finished=False)
            await asyncio.sleep(0.5)

    injecting = asyncio.create_task(inject_all_along())
    try:
        await feeding
        await _drain(run, label="after the duplicates")
        await stop_task(injecting)
        await _inject_duplicates(run, injected, finished=True)  # old news for finished processes, too

        async def queues_empty() -> bool:  # the last copies handled before the audit
            return all([await _depth(dep, suffix) == 0 for suffix in ("inner", "service", f"command.{EFFECTS_API}")])

        r.expect(await _wait_for(queues_empty, 60) is not None, "the injected copies were not consumed within 60 s")
    finally:
        await stop_task(feeding)
        await stop_task(injecting)
    r.details["injected"] = dict(injected)
    r.details["injected_total"] = sum(injected.values())
    r.expect(injected["stale_run"] > 0 and injected["reply"] > 0, f"too little was injected: {dict(injected)}")


async def _depth(dep: Deployment, suffix: str) -> int:
    return await queue_depth(dep.settings.broker_url, dep.queue(suffix))


async def _inject_duplicates(run: Run, injected: Counter[str], *, finished: bool) -> None:
    """Republish, shuffled and several times each, the messages of a few processes: RunStage for each of
    their past transitions (stale) and the current one, their outbox (the message in flight), the service
    command of each call they made, and each recorded service reply."""
    dep, rng = run.dep, run.rng
    schema = dep.schema
    status = "status IN ('completed', 'failed')" if finished else "status IN ('running', 'waiting')"
    rows = await dep.fetch(f"SELECT doc FROM {schema}.processes WHERE {status} ORDER BY random() LIMIT $1",
                           run.profile.dup_docs_per_round)
    if not rows:
        return
    docs = [ProcessDocument.from_json(row["doc"]) for row in rows]
    history: dict[str, dict[int, dict[str, Any]]] = {}
    for row in await dep.fetch(f"SELECT process_id, version, entry FROM {schema}.history"
                               " WHERE process_id = ANY($1::text[])", [d.process_id for d in docs]):
        history.setdefault(row["process_id"], {})[row["version"]] = orjson.loads(row["entry"])
    signer = dep.flow.engine.signer
    messages: list[tuple[str, Outgoing]] = []
    task_ids: list[str] = []
    for doc in docs:
        entries = history.get(doc.process_id, {})
        for version in range(1, doc.version):  # each past transition: "run the stage it ran"
            stage = (entries.get(version + 1) or {}).get("stage")
            if stage:
                body = dep.flow.engine.messages.sign(RunStage(doc.process_id, doc.case, stage, version).to_json())
                messages.append(("stale_run", Outgoing(INNER, f"chaos-stale-{uuid.uuid4().hex}", body)))
        if doc.stage:  # the current transition
            body = dep.flow.engine.messages.sign(RunStage(doc.process_id, doc.case, doc.stage, doc.version).to_json())
            messages.append(("current_run", Outgoing(INNER, f"chaos-current-{uuid.uuid4().hex}", body)))
        for m in doc.outbox:  # exactly what is (or was) in flight
            body = m.body.encode()
            body = dep.flow.engine.messages.sign(body) if m.queue == INNER else body
            messages.append(("outbox", Outgoing(m.queue, f"chaos-outbox-{uuid.uuid4().hex}", body)))
        for version, entry in entries.items():  # every call made: the same command, the same taskId
            if entry.get("event") == "call":
                task_id = signer.sign(TaskRef(doc.process_id, doc.case, EFFECTS_API, entry["to"], version))
                payload = {"n": doc.input["n"], "step": CHAOS_FLOW_CALLS[entry["to"]], "process_id": doc.process_id}
                body = ServiceCommand(task_id, EFFECTS_API, payload).to_json()
                command = Outgoing(command_queue(EFFECTS_API), f"chaos-cmd-{uuid.uuid4().hex}", body)
                messages.append(("command", command))
                task_ids.append(task_id)
    for row in await dep.fetch(f"SELECT reply FROM {schema}.stageflow_inbox"
                               " WHERE task_id = ANY($1::text[]) AND reply IS NOT NULL", task_ids):
        messages.append(("reply", Outgoing(SERVICE, f"chaos-reply-{uuid.uuid4().hex}", row["reply"].encode())))
    copies = shuffled([(kind, m) for kind, m in messages for _ in range(rng.randint(2, 4))], rng)
    await dep.flow.broker.publish([m for _, m in copies])
    injected.update(kind for kind, _ in copies)


# -- 5. poison messages -----------------------------------------------------------------------------------

POISON_AFTER = 2
# RabbitMQ's x-delivery-limit, the backstop behind Stageflow's own poison detection. Each SIGKILL returns
# every message the dead worker held (+1 to their delivery count) whether it ran them or not, and during
# a storm of poison kills innocent messages wait, redelivered, beside the poison ones: at the default 20,
# a run with 50 poison messages (~140 worker deaths) had ~20 innocent messages dead-lettered by RabbitMQ
# (their processes recovered only through the relay). The backstop is raised here so the scenario tests
# Stageflow's own detection; STAGEFLOW_CHAOS_POISON_DELIVERY_LIMIT=20 shows the effect.
POISON_DELIVERY_LIMIT = int(os.environ.get("STAGEFLOW_CHAOS_POISON_DELIVERY_LIMIT", "100"))


async def poison(run: Run) -> None:
    p, dep, r, rng = run.profile, run.dep, run.result, run.rng
    await dep.boot()
    items = flow_items(p.poison_healthy, "h") + [(Killer.name, {}, f"p-{n}") for n in range(p.poison)]
    supervisor = dep.supervise(dep.cluster.workers)  # like a process supervisor: restart what died
    unexpected = dep.supervise([dep.services])
    feeding = asyncio.create_task(dep.feed(shuffled(items, rng), in_flight=p.in_flight))
    try:
        await feeding
        await _drain(run, label="after the poison")
    finally:
        await stop_task(feeding)
    by_case = await dep.fetch(f"SELECT process_id, case_name FROM {dep.schema}.processes")
    run.healthy = [row["process_id"] for row in by_case if row["case_name"] == ChaosFlow.name]
    run.poison = [row["process_id"] for row in by_case if row["case_name"] == Killer.name]
    run.expected_parked = p.poison
    r.kills = len(supervisor.deaths)
    r.details.update(poison=p.poison, poison_after=POISON_AFTER, worker_deaths=len(supervisor.deaths),
                     unexpected_deaths=unexpected.deaths)
    # Each poison message is run alone POISON_AFTER times (each kills its worker) before it is parked.
    r.expect(r.kills >= p.poison * POISON_AFTER,
             f"{r.kills} worker deaths: fewer than {POISON_AFTER} isolated runs per poison message")
    r.expect(not unexpected.deaths, f"the services process died: {unexpected.deaths}")


# -- 6. malformed and tampered messages -------------------------------------------------------------------


async def bad_messages(run: Run) -> None:
    p, dep, r, rng = run.profile, run.dep, run.result, run.rng
    run.healthy = dep.process_ids  # every process started here must complete
    await dep.boot()
    feeding = asyncio.create_task(dep.feed(flow_items(p.bad_healthy, "b"), in_flight=p.in_flight))
    kinds: Counter[str] = Counter()
    try:
        batches = 10
        for batch in range(batches):
            count = p.bad // batches + (1 if batch < p.bad % batches else 0)
            await dep.flow.broker.publish(await _bad_batch(run, count, kinds))
            await asyncio.sleep(rng.uniform(0.1, 0.4))
        await feeding
        await _drain(run, label="after the bad messages")
    finally:
        await stop_task(feeding)
    run.expected_parked = p.bad
    run.parked_wait_s = 30.0
    r.details["injected"] = dict(kinds)


async def _bad_batch(run: Run, count: int, kinds: Counter[str]) -> list[Outgoing]:
    dep, rng = run.dep, run.rng
    rows = await dep.fetch(f"SELECT doc FROM {dep.schema}.processes ORDER BY random() LIMIT 20")
    docs = [ProcessDocument.from_json(row["doc"]) for row in rows]
    waiting = [d.waiting.task_id for d in docs if isinstance(d.waiting, ServiceWait | ResendWait)]
    signer = dep.flow.engine.signer
    attacker = TaskIdSigner(["an-attackers-key"])
    limit = dep.settings.max_message_bytes
    signed = dep.flow.engine.messages.sign

    def some_doc() -> ProcessDocument | None:
        return rng.choice(docs) if docs else None

    def real_ref() -> TaskRef:
        if waiting:
            return signer.verify(rng.choice(waiting))
        doc = some_doc()
        pid = doc.process_id if doc else str(uuid.uuid4())
        return TaskRef(pid, ChaosFlow.name, EFFECTS_API, "step_2", 2)

    def evil(task_id: str) -> bytes:
        return ServiceReplyMessage(task_id, ok=True, data={"step": 0, "evil": True}).to_json()

    def make(kind: str) -> tuple[str, bytes]:
        doc = some_doc()
        pid = doc.process_id if doc else str(uuid.uuid4())
        match kind:
            case "bad_json":
                return INNER, b'{"process_id": "' + pid.encode() + b'", oops'
            case "not_an_object":
                return INNER, b'["run", "step_1"]'
            case "wrong_schema":
                return INNER, orjson.dumps({"process_id": pid, "case": ChaosFlow.name, "stage": 1, "transition": "1"})
            case "unknown_case":
                return INNER, RunStage(pid, "no_such_case", "step_1", 1).to_json()
            case "unknown_stage":
                return INNER, RunStage(pid, ChaosFlow.name, "no_such_stage", doc.version if doc else 1).to_json()
            case "unknown_process":
                return INNER, RunStage(str(uuid.uuid4()), ChaosFlow.name, "step_1", 1).to_json()
            case "unsigned_item_done":  # completes a fan-out item, with no signature at all
                return INNER, ItemDone(pid, ChaosFlow.name, 1, 0, True, {"evil": True}).to_json()
            case "forged_run_stage":  # the right shape, signed with a key we do not have
                return INNER, MessageSigner(["an-attackers-key-0123456789abcdef"]).sign(
                    RunStage(pid, ChaosFlow.name, "step_1", doc.version if doc else 1).to_json())
            case "oversize":
                return INNER, orjson.dumps({"process_id": pid, "case": ChaosFlow.name, "stage": "step_1",
                                            "transition": 1, "pad": "x" * (limit + 100)})
            case "reply_bad_json":
                return SERVICE, b"\xff\xfe not json"
            case "reply_no_task_id":
                return SERVICE, b'{"ok": true, "data": {"step": 1}}'
            case "forged_task_id":  # the right content, signed with a key we do not have
                return SERVICE, evil(attacker.sign(real_ref()))
            case "altered_task_id":  # other content (an earlier transition), our genuine signature
                ref = real_ref()
                genuine = signer.sign(ref)
                altered = TaskIdSigner(["any"]).sign(TaskRef(ref.process_id, ref.case, ref.api, ref.stage,
                                                             max(1, ref.transition - 1)))
                return SERVICE, evil(altered.rpartition(".")[0] + "." + genuine.rpartition(".")[2])
            case "truncated_signature":
                genuine = signer.sign(real_ref())
                return SERVICE, evil(genuine[:-4])
            case "command_bad_json":
                return command_queue(EFFECTS_API), b"{{{"
            case "command_wrong_api":
                command = ServiceCommand(signer.sign(real_ref()), "someone_else", {"n": 0, "step": 1})
                return command_queue(EFFECTS_API), command.to_json()
        raise ValueError(kind)

    messages = []
    for _ in range(count):
        kind = BAD_KINDS[sum(kinds.values()) % len(BAD_KINDS)]
        kinds[kind] += 1
        queue, body = make(kind)
        if queue == INNER and kind not in _UNSIGNED_KINDS:  # signed: the parser's own checks must refuse it
            body = signed(body)
        messages.append(Outgoing(queue, f"chaos-bad-{kind}-{uuid.uuid4().hex[:8]}", body))
    rng.shuffle(messages)
    return messages


BAD_KINDS = ("bad_json", "not_an_object", "wrong_schema", "unknown_case", "unknown_stage", "unknown_process",
             "oversize", "reply_bad_json", "reply_no_task_id", "forged_task_id", "altered_task_id",
             "truncated_signature", "command_bad_json", "command_wrong_api", "unsigned_item_done",
             "forged_run_stage")
_UNSIGNED_KINDS = ("not_an_object", "unsigned_item_done", "forged_run_stage")


# -- running one scenario and measuring it ----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    body: Callable[[Run], Awaitable[None]]
    workers: Callable[[Profile], int]
    settings: dict[str, Any] = field(default_factory=dict)  # for the driver and its subprocesses
    # Servers of its own, started before the deployment and stopped after it (None: the tests' servers).
    servers: Callable[[], AbstractAsyncContextManager[Servers]] | None = None


SCENARIOS = (
    Scenario("kills", "random SIGKILLs of workers (restarted at once) and one of the services process",
             worker_kills, lambda p: p.kill_workers),
    Scenario("restarts", "RabbitMQ restarted, then PostgreSQL stopped -m immediate and started, mid-run",
             restarts, lambda p: 3),
    Scenario("frozen", "one worker SIGSTOPped until RabbitMQ requeues its messages, then SIGCONTed",
             frozen_worker, lambda p: 2),
    Scenario("duplicates", "stale, current and duplicate RunStage, commands and replies, shuffled, 2-4 copies",
             duplicates, lambda p: 3),
    Scenario("poison", "stages that SIGKILL their own worker among healthy processes (POISON_AFTER=2)",
             poison, lambda p: 3, {"poison_after": POISON_AFTER, "delivery_limit": POISON_DELIVERY_LIMIT}),
    Scenario("malformed", "malformed, oversize, unknown and tampered (forged/altered taskId) messages",
             bad_messages, lambda p: 3),
    Scenario("hostile", "forged inner messages and http commands on the broker, NUL/int32/no-key/broken-body "
             "requests to the gateway, among healthy processes", lambda run: _hostile(run), lambda p: 2),
    Scenario("broker-node-kill", "3-node RabbitMQ cluster: the node the workers are on SIGKILLed mid-run, "
             "kept down (longest gap <= 5 s)", lambda run: _cluster("broker_node_kill", run), lambda p: 2,
             {"relay_grace_s": servers.CLUSTER_RELAY_GRACE_S}, servers.rabbit_cluster),
    Scenario("pg-failover", "PostgreSQL primary stopped -m immediate mid-run, its synchronous replica promoted "
             "(longest gap <= 10 s)", lambda run: _cluster("pg_failover", run), lambda p: 2,
             {"relay_grace_s": servers.CLUSTER_RELAY_GRACE_S}, servers.pg_pair),
)


async def _cluster(name: str, run: Run) -> None:
    from chaos import cluster  # it builds on this module's helpers

    await getattr(cluster, name)(run)


async def _hostile(run: Run) -> None:
    from chaos.hostile import hostile  # it builds on this module's helpers

    await hostile(run)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


async def run_scenario(scenario: Scenario, profile: Profile, log_root: Path, rng: random.Random) -> Result:
    """Deploy, run, measure and tear down one scenario. Never raises (but for cancellation): problems go
    into the result. RabbitMQ and PostgreSQL are made to run again whatever happened."""
    async with servers.exclusive(say):
        if scenario.servers is None:
            return await _run_scenario(scenario, profile, log_root, rng, Servers())
        began = time.monotonic()
        try:
            async with scenario.servers() as own:
                return await _run_scenario(scenario, profile, log_root, rng, own, began=began)
        except servers.ServerControlError as exc:  # its servers could not be started: a failure, with why
            result = Result(scenario.name, scenario.title, seconds=time.monotonic() - began)
            result.problems.append(f"not run: {exc}")
            say(f"[chaos] {scenario.name}: FAILED, {exc}")
            return result


async def _run_scenario(scenario: Scenario, profile: Profile, log_root: Path, rng: random.Random, place: Servers,
                        *, began: float | None = None) -> Result:
    result = Result(scenario.name, scenario.title)
    began = time.monotonic() if began is None else began  # a scenario's own servers' start-up counts too
    dep = Deployment(scenario.name, log_root, workers=scenario.workers(profile), overrides=scenario.settings,
                     servers=place)
    run = Run(dep, result, profile, rng)
    say(f"[chaos] {scenario.name}: {scenario.title} ({dep.namespace})")
    cancelled = False
    try:
        await dep.open()
        async with asyncio.timeout(profile.scenario_limit_s):
            await scenario.body(run)
    except asyncio.CancelledError:
        cancelled = True
        raise
    except TimeoutError:
        result.problems.append(f"the scenario ran out of its {profile.scenario_limit_s:g} s")
    except Exception as exc:  # noqa: BLE001 - reported in the result
        result.problems.append(f"{type(exc).__name__}: {exc}")
        say(traceback.format_exc())
    finally:
        result.problems += await servers.ensure_servers()
        if not cancelled:
            try:
                await asyncio.wait_for(measure(run), 120)
            except Exception as exc:  # noqa: BLE001
                result.problems.append(f"measuring failed: {type(exc).__name__}: {exc}")
        if not cancelled and not result.ok:
            say(f"[chaos] {scenario.name} FAILED: {result.problems}\n{dep.logs()}")
        result.problems += await dep.teardown()
        result.seconds = time.monotonic() - began
    say(f"[chaos] {scenario.name}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f}s "
        f"(started {result.started}, lost {result.lost}, applied twice {result.applied_twice}, "
        f"parked {result.parked})")
    return result


async def measure(run: Run) -> None:
    dep, r = run.dep, run.result
    schema = dep.schema
    rows = await dep.fetch(f"SELECT process_id, status, doc->'error'->>'poison' AS poison FROM {schema}.processes")
    status = {row["process_id"]: row["status"] for row in rows}
    poisoned = {row["process_id"] for row in rows if row["status"] == "failed" and row["poison"] == "true"}
    started = set(dep.process_ids)
    r.started = len(started)
    r.completed = sum(1 for pid in started if status.get(pid) == "completed")
    r.lost = sum(1 for pid in started if status.get(pid) not in ("completed", "failed", "cancelled"))
    r.failed_as_designed = len(poisoned & set(run.poison))
    r.failed_unexpectedly = sum(1 for pid in started if status.get(pid) == "failed" and pid not in run.poison)
    r.expect(set(status) == started, f"{len(set(status) - started)} processes nobody started are in the store")
    r.expect(r.failed_unexpectedly == 0, f"{r.failed_unexpectedly} processes failed that should have completed")
    r.expect(r.failed_as_designed == len(run.poison),
             f"only {r.failed_as_designed} of {len(run.poison)} poison processes ended failed with error.poison")
    r.expect(r.completed == len(run.healthy), f"{r.completed} of {len(run.healthy)} healthy processes completed")

    twice_commits = await dep.execute(lambda c: doubled_commits(c, schema))
    twice_effects = await dep.execute(lambda c: doubled_effects(c, schema))
    r.applied_twice = twice_commits + twice_effects
    r.details.update(doubled_stage_commits=twice_commits, doubled_effects=twice_effects)
    if run.healthy:
        report = await dep.execute(lambda c: audit(c, schema, run.healthy, run.expected, others_may_have_effects=True))
        figures = report.figures()
        r.details["audit"] = {k: v for k, v in figures.items() if v}
        broken = {k: figures[k] for k in ("wrong_stage_commits", "silent_overwrites", "missing_effects",
                                           "stray_effects", "bad_histories") if figures[k]}
        r.expect(not broken, f"the ledger audit found {broken}; e.g. {report.examples[:3]}")

    depth = await dep.wait_parked(run.expected_parked, run.parked_wait_s if run.expected_parked else 1.0)
    if run.expected_parked == 0:
        await asyncio.sleep(1.0)  # anything parked late still shows
    parked = await dep.take_parked()
    r.parked = len(parked)
    r.details["parked_reasons"] = dict(Counter(f"{m.source}: {_reason_kind(m.reason)}" for m in parked))
    if run.poison:
        _check_poison_parked(run, parked)
    else:
        r.expect(r.parked == run.expected_parked, f"{r.parked} messages parked, expected {run.expected_parked} "
                                                  f"(depth {depth}; reasons {r.details['parked_reasons']})")


def _check_poison_parked(run: Run, parked: list[Parked]) -> None:
    """Every poison process has its message parked as poison; nothing else was parked.

    (A poison process's message can be parked more than once: while it is being isolated, the relay may
    re-publish the outbox of its process, which has not moved on; every copy is parked in the end.)"""
    r = run.result
    poison = set(run.poison)
    owners: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for m in parked:
        pid = _owner(run, m)
        if pid in poison and m.reason.startswith("poison message"):
            owners[pid] += 1
        else:
            others[f"{'poison' if pid in poison else 'healthy' if pid else 'unknown'} process, {m.source}: "
                   f"{_reason_kind(m.reason)}"] += 1
    r.details["parked_poison_copies_beyond_one"] = sum(owners.values()) - len(owners)
    r.details["parked_other"] = dict(others)
    r.expect(len(owners) == len(poison), f"{len(poison) - len(owners)} poison processes have no parked message")
    r.expect(not others, f"{sum(others.values())} parked messages are not poison messages of poison processes: "
                         f"{dict(others)}")


def _owner(run: Run, m: Parked) -> str | None:
    """The process a parked message belongs to (None if it cannot be read)."""
    try:
        if m.source == SERVICE:
            return run.dep.flow.engine.signer.verify(ServiceReplyMessage.parse(m.body).task_id).process_id
        return RunStage.parse(m.body).process_id
    except Exception:  # noqa: BLE001 - unreadable: that is what some parked messages are
        return None


def _reason_kind(reason: str) -> str:
    """A parked reason without its particulars (names, ids, sizes, parser details), for counting."""
    reason = reason.split("\n")[0]  # not the hint
    if reason.startswith("message is not valid JSON"):
        reason = "message is not valid JSON"
    reason = re.sub(r"'[^']*'", "'.'", reason)
    return re.sub(r"\d+", "N", reason)[:70]
