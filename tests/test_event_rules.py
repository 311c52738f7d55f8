"""The rules of events, callback tokens and lookup by client key, on the embedded harness: no server needed.

Their guarantees under crashes, on RabbitMQ + PostgreSQL, are in ``tests/test_events.py`` and
``tests/test_events_cluster.py``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from framework import BusinessCase, StageContext, Status, stage
from framework.callbacks import CallbackRef, CallbackTokens
from framework.cli import cli
from framework.errors import (
    CallbackTokenError,
    InvalidInputError,
    ProcessNotFoundError,
    ProcessStateError,
    StageError,
)
from framework.planner import MAX_EVENT_RECORD_BYTES, MAX_EVENTS_KEPT
from framework.signals import MAX_EVENT_DATA_BYTES
from framework.state import EventResumed, EventWait, RetryWait, wait_from_json
from framework.testing import run_cases
from tests.support.signal_cases import CASES, AwaitPayment, Confirmation, Holders


async def test_an_event_resumes_its_wait_once_and_a_repeated_id_changes_nothing() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {}, skip_time=False, client_key="order-1")
        assert isinstance(doc.waiting, EventWait) and doc.waiting.name == "paid"
        first = await env.flow.send_event(doc.process_id, "paid", {"amount": 12}, event_id="pay-1")
        assert (first.duplicate, first.resumed) == (False, True)
        await env.join()
        again = await env.flow.send_event(doc.process_id, "paid", {"amount": 99}, event_id="pay-1")
        assert again.duplicate and not again.resumed
        done = await env.get(doc.process_id)
        assert done.status is Status.COMPLETED
        assert done.result == {"event": {"amount": 12}, "event_id": "pay-1", "attempt": 1}
        assert [(e.id, e.consumed) for e in done.events] == [("pay-1", doc.version + 1)]  # the delivery's version
        assert (await env.flow.get_by_key("await_payment", "order-1")).process_id == doc.process_id
        with pytest.raises(ProcessStateError, match="already completed"):  # a new id to a finished process
            await env.flow.send_event(doc.process_id, "paid", {}, event_id="pay-2")
        assert (await env.get(doc.process_id)).version == done.version


async def test_an_event_before_the_wait_is_kept_and_taken_by_the_wait() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {"delay_s": 30}, skip_time=False)
        assert doc.status is Status.WAITING and not isinstance(doc.waiting, EventWait)  # in its timer
        kept = await env.flow.send_event(doc.process_id, "paid", {"early": True}, event_id="e")
        assert (kept.duplicate, kept.resumed) == (False, False)
        other = await env.flow.send_event(doc.process_id, "shipped", {"never": "waited for"})
        view = (await env.get(doc.process_id)).public_view()
        assert [e["name"] for e in view["events"]] == ["paid", "shipped"]
        assert all(e["consumed"] is None for e in view["events"])
        await env.advance(30)
        done = await env.get(doc.process_id)
        assert done.result["event"] == {"early": True}
        assert {e.name: e.consumed is not None for e in done.events} == {"paid": True, "shipped": False}
        assert other.event_id in {e.id for e in done.events}  # never waited for: still on the record


async def test_every_attempt_of_the_resumed_stage_sees_the_event() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {}, skip_time=False)
        await env.flow.send_event(doc.process_id, "paid", {"fail_once": True})
        await env.join()
        retrying = await env.get(doc.process_id)
        assert isinstance(retrying.waiting, RetryWait) and isinstance(retrying.waiting.resumed, EventResumed)
        assert wait_from_json(json.loads(retrying.to_json())["waiting"]) == retrying.waiting  # survives the store
        await env.advance(1)
        done = await env.get(doc.process_id)
        assert done.result["event"] == {"fail_once": True} and done.result["attempt"] == 2


async def test_a_wait_that_times_out_takes_the_failure_path() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {"timeout_s": 5})  # the harness skips to the deadline
        assert doc.result == {"expired": "no event 'paid' within 5 s"}


async def test_bad_events_are_refused_and_change_nothing() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {}, skip_time=False)
        bad = [("bad name", {}, None), ("paid", {"x": "a\x00b"}, None), ("paid", "x" * MAX_EVENT_DATA_BYTES, None),
               ("paid", {1, 2}, None), ("paid", {}, ""), ("paid", {}, "i" * 201)]
        for name, data, event_id in bad:
            with pytest.raises(InvalidInputError):
                await env.flow.send_event(doc.process_id, name, data, event_id=event_id)
        with pytest.raises(ProcessNotFoundError):
            await env.flow.send_event("no-such-process", "paid", {})
        with pytest.raises(ProcessNotFoundError):
            await env.flow.get_by_key("await_payment", "no-such-key")
        after = await env.get(doc.process_id)
        assert after.version == doc.version and after.events == []


async def test_the_record_is_bounded_and_never_drops_an_unconsumed_event() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {"delay_s": 30}, skip_time=False)
        for i in range(MAX_EVENTS_KEPT):
            await env.flow.send_event(doc.process_id, "noise", i, event_id=f"n{i}")
        with pytest.raises(ProcessStateError, match="no wait has taken"):
            await env.flow.send_event(doc.process_id, "noise", "one too many")
        assert len((await env.get(doc.process_id)).events) == MAX_EVENTS_KEPT
        big = await env.run(AwaitPayment, {"delay_s": 30}, skip_time=False)
        chunk = "x" * (MAX_EVENT_DATA_BYTES - 100)
        for _ in range(MAX_EVENT_RECORD_BYTES // MAX_EVENT_DATA_BYTES):
            await env.flow.send_event(big.process_id, "blob", chunk)
        with pytest.raises(ProcessStateError, match="bytes"):
            await env.flow.send_event(big.process_id, "blob", chunk)
        assert len((await env.get(big.process_id)).events) == MAX_EVENT_RECORD_BYTES // MAX_EVENT_DATA_BYTES


async def test_an_event_for_a_process_in_a_fan_out_is_refused_with_a_hint() -> None:
    async with run_cases(CASES) as env:
        parent = await env.run(Holders, {"children": 2, "window": 2}, skip_time=False)
        with pytest.raises(ProcessStateError, match="fan-out"):
            await env.flow.send_event(parent.process_id, "paid", {})


async def test_a_callback_token_is_single_use_and_a_forged_or_expired_one_is_refused() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(Confirmation, {}, skip_time=False)
        token = doc.store["token"]
        with pytest.raises(CallbackTokenError, match="not signed"):
            await env.flow.signals.callback(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), data={})
        used = await env.flow.signals.callback(token, data={"by": "carrier"})
        assert used.resumed
        with pytest.raises(ProcessStateError, match="used already"):
            await env.flow.signals.callback(token, data={"by": "replay"})
        await env.join()
        assert (await env.get(doc.process_id)).result == {"confirmed": {"by": "carrier"}}

        short = await env.run(Confirmation, {"timeout_s": 5}, skip_time=False)
        env.clock.advance(6)
        with pytest.raises(CallbackTokenError, match="expired") as expired:
            await env.flow.signals.callback(short.store["token"], data={})
        assert expired.value.expired
        assert (await env.get(short.process_id)).version == short.version


async def test_a_callback_can_report_a_failure_which_takes_the_failure_path() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(Confirmation, {}, skip_time=False)
        await env.flow.signals.callback(doc.store["token"], ok=False, data={"why": "refused"})
        await env.join()
        result = (await env.get(doc.process_id)).result
        assert result["rejected"].startswith("callback for event 'confirmed' reported a failure")


def test_tokens_of_other_keys_and_other_shapes_are_refused() -> None:
    ref = CallbackRef("p", "c", "n", 3, 2_000_000_000.0)
    token = CallbackTokens(["key-a"]).sign(ref)
    assert CallbackTokens(["key-b", "key-a"]).verify(token, now=0) == ref  # rotated keys still verify
    with pytest.raises(CallbackTokenError):
        CallbackTokens(["key-b"]).verify(token, now=0)
    with pytest.raises(CallbackTokenError):
        CallbackTokens(["key-a"]).verify("", now=0)


async def test_wait_for_checks_its_arguments() -> None:
    async with run_cases(CASES) as env:
        doc = await env.run(AwaitPayment, {}, skip_time=False)
        ctx_errors = []
        for name, timeout in (("", None), ("x" * 101, None), ("ok", 0)):
            from framework.context import StageContext

            ctx = StageContext(process_id=doc.process_id, case="c", stage="s", transition=1, input=None,  # type: ignore[arg-type]
                               store={}, now=0.0)
            with pytest.raises(StageError) as raised:
                ctx.wait_for(name, timeout_s=timeout)
            ctx_errors.append(raised.value.message)
        assert len(ctx_errors) == 3


def test_cli_event_and_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGEFLOW_STORE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("STAGEFLOW_BROKER_URL", "memory://")
    monkeypatch.setenv("STAGEFLOW_CASES", "tests.support.signal_cases")
    runner = CliRunner()
    started = runner.invoke(cli, ["start", "await_payment", "--input", '{"delay_s": 60}', "--client-key", "K-1"])
    assert started.exit_code == 0, started.output
    process_id = started.stdout.strip()
    sent = runner.invoke(cli, ["event", "paid", "--case", "await_payment", "--key", "K-1", "--data", '{"a": 1}',
                               "--event-id", "e-1"])
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout) == {"process_id": process_id, "name": "paid", "event_id": "e-1",
                                       "duplicate": False, "resumed": False, "status": "running"}
    again = runner.invoke(cli, ["event", "paid", "--process", process_id, "--event-id", "e-1"])
    assert json.loads(again.stdout)["duplicate"] is True
    shown = json.loads(runner.invoke(cli, ["lookup", "await_payment", "K-1"]).stdout)
    assert shown["process_id"] == process_id and shown["events"][0]["data"] == {"a": 1}
    missing = runner.invoke(cli, ["lookup", "await_payment", "nope"])
    assert missing.exit_code == 2 and "no process" in missing.stderr
    bad = runner.invoke(cli, ["event", "paid"])
    assert bad.exit_code == 2 and "name the process" in bad.output

    tagged = asyncio.run(_run_tagged({"customer_id": "Z-1", "order_total": 3}))  # a worker sets its attributes
    found = runner.invoke(cli, ["list", "--case", "tagged", "--search", "customer_id=Z-1"])
    assert found.exit_code == 0 and found.stdout.split()[0] == tagged, found.output
    none = runner.invoke(cli, ["list", "--case", "tagged", "--search", "customer_id=Z-2"])
    assert none.exit_code == 0 and "no process matches" in none.stderr
    refused = runner.invoke(cli, ["list", "--search", "customer_id=Z-1"])
    assert refused.exit_code == 2 and "needs the case" in refused.stderr


class SlowReply(BusinessCase):
    """Its reply-resumed stage blocks on the first run until the test lets it go (an event lands meanwhile)."""

    name = "slow_reply"
    gate: asyncio.Event | None = None
    runs: list[int] = []

    @stage
    async def ask(self, ctx: StageContext) -> None:
        ctx.call("echo", {"v": 1})

    @stage
    async def answered(self, ctx: StageContext) -> None:
        SlowReply.runs.append(ctx.transition)
        if len(SlowReply.runs) == 1 and SlowReply.gate is not None:
            await SlowReply.gate.wait()
        ctx.wait_for("go", resume="finish")

    @stage
    async def finish(self, ctx: StageContext) -> None:
        assert ctx.event is not None
        ctx.complete({"reply_then_event": ctx.event.data})


async def echo(command: Any, tx: Any) -> Any:
    return command.payload


async def test_an_event_kept_while_a_reply_is_applied_loses_neither() -> None:
    """The reply's run loses its compare-and-set to the event; the kept event re-sent the command (same taskId,
    the service's inbox answers with its recorded reply), so the reply is applied again."""
    SlowReply.gate, SlowReply.runs = asyncio.Event(), []
    async with run_cases([SlowReply], services={"echo": echo}) as env:
        doc = await env.start(SlowReply, {})
        for _ in range(200):  # until the reply's stage runs (and blocks)
            if SlowReply.runs:
                break
            await asyncio.sleep(0.01)
        kept = await env.flow.send_event(doc.process_id, "go", {"early": 1})  # moves the document on
        assert not kept.resumed
        SlowReply.gate.set()  # the blocked run loses its compare-and-set; the reply is applied again
        await env.join()
        done = await env.get(doc.process_id)
    assert done.result == {"reply_then_event": {"early": 1}}
    assert len(SlowReply.runs) == 2 and SlowReply.runs[1] == SlowReply.runs[0] + 1


async def _run_tagged(data: dict[str, Any]) -> str:
    """Start a ``tagged`` process in the CLI's store (from the environment) and run it to its wait."""
    from framework import Settings, Stageflow

    async with Stageflow.from_settings(Settings()) as flow:
        worker = flow.worker()
        await worker.start()
        try:
            doc = await flow.start("tagged", data)
            for _ in range(200):
                if (await flow.get(doc.process_id)).search:
                    return doc.process_id
                await asyncio.sleep(0.02)
            raise AssertionError("the tagged process did not reach its wait")
        finally:
            await worker.stop()
