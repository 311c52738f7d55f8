"""The fan-out rules (join policies, limits, errors), on the embedded harness: no server needed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel

from framework import BusinessCase, FanItem, Retry, StageContext, Status, stage
from framework.errors import ServiceError, StageError
from framework.fanout import FanOutState, complete, tolerated
from framework.messages import ServiceCommand
from framework.service import ServiceTransaction
from framework.state import FanOutWait
from framework.testing import run_cases


class Squares(BusinessCase):
    name = "squares"

    class Input(BaseModel):
        numbers: list[int]
        tolerate: int | float = 0
        first: bool = False
        timeout_s: float | None = None
        max_in_flight: int = 3

    @stage
    async def spread(self, ctx: StageContext) -> None:
        i = ctx.input
        ctx.fan_out(i.numbers, api="square", tolerate=i.tolerate, first=i.first, timeout_s=i.timeout_s,
                    max_in_flight=i.max_in_flight)

    @stage
    async def join(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({"results": ctx.fan_in.results, "errors": {str(k): v for k, v in ctx.fan_in.errors.items()}})


class Child(BusinessCase):
    name = "child"

    class Input(BaseModel):
        n: int

    @stage
    async def only(self, ctx: StageContext) -> None:
        ctx.complete(ctx.input.n + 1)


class Mixed(BusinessCase):
    name = "mixed"

    class Input(BaseModel):
        items: list[dict[str, Any]]

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([FanItem(**item) for item in ctx.input.items])

    @stage
    async def join(self, ctx: StageContext) -> None:
        assert ctx.fan_in is not None
        ctx.complete({"results": ctx.fan_in.results, "errors": list(ctx.fan_in.errors.values())})


async def square(command: ServiceCommand, tx: ServiceTransaction) -> int:
    n = command.payload
    if n < 0:
        raise ServiceError(f"negative: {n}")
    return n * n


SERVICES = {"square": square}


async def run(case: type[BusinessCase], input: dict[str, Any]) -> Any:
    async with run_cases([Squares, Child, Mixed], services=SERVICES) as env:
        return await env.run(case, input, raise_on_failure=False)


async def test_results_come_back_in_item_order_through_a_small_window() -> None:
    doc = await run(Squares, {"numbers": list(range(20)), "max_in_flight": 2})
    assert doc.status is Status.COMPLETED
    assert doc.result["results"] == [n * n for n in range(20)]


async def test_more_failures_than_tolerated_fail_the_fanning_stage_with_the_items_errors() -> None:
    doc = await run(Squares, {"numbers": [1, -2, 3, -4]})
    assert doc.status is Status.FAILED
    assert doc.error.stage == "spread"
    # Item 3 may or may not have failed too before the join ran: both are counted if so.
    assert re.match(r"fan-out failed: [12] of 4 items failed, 0 tolerated: item 1: negative: -2", doc.error.reason)


async def test_tolerated_failures_leave_none_in_their_place() -> None:
    doc = await run(Squares, {"numbers": [1, -2, 3, -4], "tolerate": 0.5})
    assert doc.status is Status.COMPLETED
    assert doc.result["results"] == [1, None, 9, None]
    assert set(doc.result["errors"]) == {"1", "3"}


async def test_first_success_decides() -> None:
    doc = await run(Squares, {"numbers": [-1, 5, 6, 7], "first": True, "max_in_flight": 1})
    assert doc.status is Status.COMPLETED
    assert doc.result["results"][:2] == [None, 25]
    assert doc.result["results"][2:] == [None, None]  # never started: the fan-out was decided
    doc = await run(Squares, {"numbers": [-1, -2], "first": True})
    assert doc.status is Status.FAILED


async def test_an_empty_fan_out_joins_at_once() -> None:
    doc = await run(Squares, {"numbers": []})
    assert doc.status is Status.COMPLETED and doc.result == {"results": [], "errors": {}}


async def test_commands_and_child_processes_mix_and_a_child_that_cannot_start_is_a_failed_item() -> None:
    items = [{"api": "square", "payload": 4}, {"case": "child", "input": {"n": 1}},
             {"case": "child", "input": {"n": "not a number"}}, {"case": "nope", "input": {}}]
    doc = await run(Mixed, {"items": items[:2]})
    assert doc.status is Status.COMPLETED and doc.result["results"] == [16, 2]
    async with run_cases([Squares, Child, Mixed], services=SERVICES) as env:
        doc = await env.run(Mixed, {"items": items}, raise_on_failure=False)
        assert doc.status is Status.FAILED
        assert "child process not started" in doc.error.reason
        assert env.parked() == []  # bad items fail their item; nothing is parked


async def test_bad_fan_out_arguments_fail_the_stage_with_a_clear_reason() -> None:
    doc = await run(Mixed, {"items": [{"api": "square"}, {"api": "x", "case": "child"}]})
    assert doc.status is Status.FAILED
    assert "names exactly one of api=" in doc.error.reason
    doc = await run(Squares, {"numbers": [1], "max_in_flight": 0})
    assert doc.status is Status.FAILED and "max_in_flight" in doc.error.reason


def test_the_join_rule() -> None:
    state = FanOutState(group=2, total=3, window=1, tolerate=1, first=False, next_index=1, done=0, failed=0,
                        decided=None)
    state, released = complete(state, ok=False)
    assert (state.failed, state.decided, released) == (1, None, 1)
    state, released = complete(state, ok=True)
    assert (state.done, state.decided, released) == (1, None, 2)
    state, released = complete(state, ok=False)
    assert (state.failed, state.decided, released) == (2, "failed", None)  # 2 > 1 tolerated
    state, released = complete(state, ok=True)  # a late item after the decision changes no decision
    assert state.decided == "failed" and released is None


@pytest.mark.parametrize("tolerate", [-1, 1.5, "3", True, None])
def test_tolerate_must_be_a_count_or_a_share(tolerate: Any) -> None:
    with pytest.raises(StageError, match="tolerate"):
        tolerated(tolerate, total=10, first=False)


def test_tolerate_as_a_share_rounds_down_and_first_tolerates_all_but_one() -> None:
    assert tolerated(0.25, total=10, first=False) == 2
    assert tolerated(3, total=10, first=False) == 3
    assert tolerated(0, total=10, first=True) == 9


@pytest.mark.parametrize(("share", "total", "expected"), [(0.29, 100, 29), (0.57, 100, 57), (0.58, 100, 58)])
def test_tolerate_as_a_share_is_not_cut_short_by_float_rounding(share: float, total: int, expected: int) -> None:
    assert tolerated(share, total=total, first=False) == expected  # 0.29 * 100 is 28.999999999999996 in floats


class Unanswered(BusinessCase):
    name = "unanswered"

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([1, 2], api="nobody_listens", timeout_s=30)

    @stage
    async def join(self, ctx: StageContext) -> None:
        ctx.complete()


async def test_a_fan_out_that_does_not_finish_in_time_fails_its_stage() -> None:
    async with run_cases([Unanswered]) as env:
        doc = await env.run(Unanswered, raise_on_failure=False)
    assert doc.status is Status.FAILED
    assert doc.error.reason == "fan-out not finished within 30 s (0 of 2 items done)"


class FlakyJoin(BusinessCase):
    """Its joining stage fails on the first try (a transient error) and is retried."""

    name = "flaky_join"
    retry = Retry(attempts=3, backoff_s=1)

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([1, 2, 3], api="square")

    @stage
    async def join(self, ctx: StageContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("the report database blinked")
        ctx.complete({"results": ctx.fan_in.results if ctx.fan_in else None, "attempt": ctx.attempt})


async def test_a_retried_joining_stage_sees_the_fan_in_again() -> None:
    async with run_cases([FlakyJoin], services=SERVICES) as env:
        doc = await env.run(FlakyJoin, raise_on_failure=False)
    assert doc.status is Status.COMPLETED, doc.error
    assert doc.result == {"results": [1, 4, 9], "attempt": 2}



async def test_retrying_a_cancelled_fan_out_parent_does_not_run_its_joining_stage_without_the_fan_in() -> None:
    async with run_cases([Squares]) as env:  # no square service yet: the fan-out stays open
        doc = await env.run(Squares, {"numbers": [1, 2]}, skip_time=False)
        assert isinstance(doc.waiting, FanOutWait)
        await env.flow.operations.cancel(doc.process_id)
        await env.flow.operations.retry(doc.process_id)
        await env.join()
        doc = await env.get(doc.process_id)
    # Retried from the fanning stage: waiting on a new fan-out, not failed for want of results.
    assert doc.status is Status.WAITING and doc.waiting.kind == "fan_out", (doc.status, doc.error)
    assert doc.waiting.group > 2
