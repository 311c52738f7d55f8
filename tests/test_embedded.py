"""The embedded default (in-memory broker + SQLite) runs the same cases with no server at all,
and the test harness users get for their own cases works as documented."""

from __future__ import annotations

from typing import Any

import pytest

from business_cases import EcommerceOrder
from business_cases.order_services import HANDLERS, SETUP_SQL
from framework import ServiceError, Settings, Status
from framework.broker.base import INNER, REASON_HEADER, Outgoing
from framework.messages import ServiceCommand
from framework.service import ServiceTransaction
from framework.testing import ProcessFailed, run_cases
from tests.support.cases import Crasher, FiveCalls, Jumper


async def fake_effects(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    """Stands in for the ``effects`` service: a user's test can fake a service this way."""
    return {"step": command.payload["step"], "ok": True}


async def test_example_order_runs_embedded_with_its_real_services() -> None:
    async with run_cases([EcommerceOrder], services=HANDLERS, service_setup_sql=SETUP_SQL) as env:
        doc = await env.run(EcommerceOrder, {"order_id": "A-1", "desired_date": "2026-12-01"}, client_key="A-1")
    assert doc.status is Status.COMPLETED
    assert doc.result["job_id"] == doc.store["job_id"]
    assert doc.result["slot"] == doc.store["schedule"]["slot"]


async def test_jump_store_and_replies_embedded() -> None:
    async with run_cases([Jumper, FiveCalls], services={"effects": fake_effects}, workers=2) as env:
        jumper = await env.run(Jumper, {"word": "hi"})
        five = [await env.start(FiveCalls, {"n": n}) for n in range(50)]
        await env.join()
        five = [await env.get(d.process_id) for d in five]
    assert jumper.result == {"word": "HI", "seen": ["first", "third", "fourth"]}
    assert {d.status for d in five} == {Status.COMPLETED}


async def test_harness_raises_stage_failures_with_their_reason() -> None:
    async with run_cases([Crasher]) as env:
        with pytest.raises(ProcessFailed, match="failed at stage 'boom': RuntimeError: the stage blew up"):
            await env.run(Crasher)
        doc = await env.run(Crasher, raise_on_failure=False)
    assert doc.status is Status.FAILED


async def test_a_service_error_reply_fails_the_process_with_the_services_words() -> None:
    async def refuse(command: ServiceCommand, tx: ServiceTransaction) -> None:
        raise ServiceError("slot unavailable")

    async with run_cases([Jumper], services={"effects": refuse}) as env:
        doc = await env.run(Jumper, {"word": "x"}, raise_on_failure=False)
    assert doc.status is Status.FAILED
    assert doc.error.reason == "service 'effects' replied with an error: slot unavailable"


async def test_malformed_messages_are_parked_embedded_and_the_worker_goes_on() -> None:
    async with run_cases([Jumper], services={"effects": fake_effects}) as env:
        sign = env.flow.engine.messages.sign  # signed, so the parser's own checks are what refuses them
        await env.broker.publish([Outgoing(INNER, "bad-1", sign(b"{oops")), Outgoing(INNER, "bad-2", b'{"case": "x"}')])
        doc = await env.run(Jumper, {"word": "ok"})
        reasons = [m.headers[REASON_HEADER] for m in env.parked()]
    assert doc.status is Status.COMPLETED
    assert len(reasons) == 2 and "not valid JSON" in reasons[0] and "not signed" in reasons[1]


def test_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STAGEFLOW_BROKER_URL", "STAGEFLOW_STORE_URL", "STAGEFLOW_SECRET_KEYS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.embedded
    assert settings.signing_keys()  # the embedded demo signs with a built-in key


async def test_harness_skips_through_retries_and_waits_without_sleeping() -> None:
    import time as wall

    from tests.support.failure_cases import Flaky, Waiter

    started = wall.monotonic()
    async with run_cases([Flaky, Waiter]) as env:
        t0 = env.clock.now()
        flaky = await env.run(Flaky, {"succeed_on": 3})
        waiter = await env.run(Waiter, {"until": t0 + 7 * 24 * 3600})
    assert flaky.result == {"succeeded_on": 3}
    assert waiter.result["finished"] == t0 + 7 * 24 * 3600  # a week of waiting, skipped
    assert wall.monotonic() - started < 5


async def test_a_reply_too_large_for_a_message_is_an_error_reply_and_its_effect_is_undone() -> None:
    applied = []

    async def bulky(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
        applied.append(command.task_id)
        await tx.execute("CREATE TABLE IF NOT EXISTS bulky_effects (n INTEGER)")
        await tx.execute("INSERT INTO bulky_effects (n) VALUES (1)")
        return {"blob": "x" * 300_000}  # over the 256 KiB message limit

    async with run_cases([Jumper], services={"effects": bulky}) as env:
        doc = await env.run(Jumper, {"word": "x"}, raise_on_failure=False)
        parked = env.parked()
        async with env.inbox.transaction() as tx:
            tables = await tx.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'bulky_effects'")
    assert doc.status is Status.FAILED
    assert "over the 262144-byte message limit" in doc.error.reason
    assert parked == [] and applied  # answered with an error, not parked
    assert tables == 0  # the handler's writes were rolled back with the refused reply
