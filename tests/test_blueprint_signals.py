"""Blueprint ``approval`` and ``wait_for_event`` steps on the embedded harness (the admin page drives the example
in Chromium: ``tests/test_admin_approvals.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.blueprint import load_blueprint
from framework.blueprint.loader import BlueprintError
from framework.errors import ProcessStateError
from framework.state import EventWait
from framework.testing import run_cases

EXAMPLE = Path(__file__).resolve().parents[1] / "business_cases" / "blueprints" / "discount_approval.yaml"
INPUT = {"customer": "ACME", "percent": 10}


async def test_approved_then_accepted_completes_with_the_decision_and_the_event() -> None:
    case = load_blueprint(str(EXAMPLE))
    async with run_cases([case]) as env:
        doc = await env.run(case, INPUT, skip_time=False)
        assert isinstance(doc.waiting, EventWait) and doc.waiting.name == "approval:manager"
        assert doc.store["approval"] == {"step": "manager", "assignee": "sales managers (ACME)", "deadline_s": 86400}
        early = await env.flow.send_event(doc.process_id, "offer_accepted", {"at": "early"}, event_id="acc-1")
        assert not early.resumed  # kept: the customer step takes it when it comes
        first = await env.flow.signals.decide(doc.process_id, approved=True, comment="ok for ACME", by="ann")
        assert first.resumed
        with pytest.raises(ProcessStateError, match="not waiting for an approval"):  # one decision per wait
            await env.flow.signals.decide(doc.process_id, approved=False, comment="changed my mind")
        await env.join()
        done = await env.get(doc.process_id)
    assert done.result == {"percent": 10, "approved_by": "ann", "comment": "ok for ACME", "accepted_at": "early"}
    assert done.store["manager"] == {"approved": True, "comment": "ok for ACME", "by": "ann"}


async def test_rejected_goes_to_on_reject_and_a_deadline_to_on_expiry() -> None:
    case = load_blueprint(str(EXAMPLE))
    async with run_cases([case]) as env:
        doc = await env.run(case, INPUT, skip_time=False)
        await env.flow.signals.decide(doc.process_id, approved=False, comment="too much")
        await env.join()
        assert (await env.get(doc.process_id)).result == {"refused": "too much"}
        expired = await env.run(case, INPUT)  # the harness skips to the deadline: no retry, on_expiry at once
        assert expired.result == {"expired": "no event 'approval:manager' within 86400 s"}
        waiting = await env.run(case, INPUT, skip_time=False)
        await env.flow.signals.decide(waiting.process_id, approved=True)
        await env.join()
        with pytest.raises(ProcessStateError, match="not waiting for an approval"):  # it waits for the customer
            await env.flow.signals.decide(waiting.process_id, approved=True)


async def test_a_rejection_without_on_reject_fails_the_process_with_the_comment() -> None:
    case = load_blueprint({"name": "plain_approval", "version": 1, "steps": [
        {"name": "boss", "kind": "approval"}, {"name": "ok", "kind": "complete", "result": "yes"}]})
    async with run_cases([case]) as env:
        doc = await env.run(case, {}, skip_time=False)
        await env.flow.signals.decide(doc.process_id, approved=False, comment="no", by="bob")
        await env.join()
        failed = await env.get(doc.process_id)
    assert failed.error is not None and failed.error.reason == "step 'boss' rejected by bob: no"


def test_bad_event_steps_are_refused_on_load_with_their_place() -> None:
    shape = {"name": "bad", "version": 1, "steps": [
        {"name": "b", "kind": "wait_for_event", "event": "has space"}, {"name": "c", "kind": "wait_for_event"}]}
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(shape)
    assert "has space" in "\n".join(raised.value.errors) and "'event' is a required" in "\n".join(raised.value.errors)
    meaning = {"name": "bad", "version": 1, "steps": [
        {"name": "a", "kind": "approval", "on_reject": "nowhere", "keep": {"x": "reply.body"}},
        {"name": "d", "kind": "complete"}]}
    with pytest.raises(BlueprintError) as raised:
        load_blueprint(meaning)
    text = "\n".join(raised.value.errors)
    assert "unknown step 'nowhere'" in text and "reply" in text
