"""Search attributes on the harness: declared per case, set by stages, checked, filterable; the filters on
PostgreSQL and SQLite are in the store contract (``tests/store_contract_queries.py``), over HTTP in
``tests/test_events.py``."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from framework import BusinessCase, Status, stage
from framework.errors import CaseDefinitionError, InvalidInputError
from framework.search import parse_filters
from framework.store.records import ProcessFilter
from framework.testing import run_cases
from tests.support.signal_cases import Tagged


async def test_stages_set_typed_attributes_that_lists_filter_on() -> None:
    async with run_cases([Tagged]) as env:
        a = await env.run(Tagged, {"customer_id": "C-1", "order_total": 12.5, "vip": True}, skip_time=False)
        await env.run(Tagged, {"customer_id": "C-2", "order_total": 7, "items": 4}, skip_time=False)
        assert a.search == {"customer_id": "C-1", "order_total": 12.5, "vip": True, "items": 1}
        assert a.public_view()["search"] == a.search
        search = parse_filters(Tagged.search_attributes, ["customer_id=C-1", "vip=true"], case="tagged")
        assert search == (("customer_id", "C-1"), ("vip", True))
        assert await env.flow.store.find_ids(ProcessFilter(case="tagged", search=search)) == [a.process_id]
        totals = parse_filters(Tagged.search_attributes, ["order_total=7", "items=4"], case="tagged")
        assert len(await env.flow.store.find_ids(ProcessFilter(case="tagged", search=totals))) == 1
        await env.flow.send_event(a.process_id, "done", {})
        await env.join()
        assert (await env.get(a.process_id)).search == a.search  # kept by later transitions


async def test_a_wrong_type_or_an_undeclared_attribute_fails_the_stage_with_a_clear_reason() -> None:
    class Loose(BusinessCase):
        name = "loose"
        search_attributes = {"region": str}

        @stage
        async def only(self, ctx):  # type: ignore[no-untyped-def]
            ctx.search["country"] = "FR"
            ctx.complete()

    async with run_cases([Tagged, Loose]) as env:
        bad = await env.run(Tagged, {"customer_id": "C-1", "order_total": 1, "bad": True}, raise_on_failure=False)
        assert bad.status is Status.FAILED and bad.search == {}
        assert "search attribute 'items' must be of type integer, not 'many'" in bad.error.reason  # type: ignore[union-attr]
        loose = await env.run(Loose, {}, raise_on_failure=False)
        assert "'country' is not declared by the case (declared: region)" in loose.error.reason  # type: ignore[union-attr]


def test_declarations_are_checked_when_the_case_is_defined() -> None:
    for declared, message in (({"Bad-Name": str}, "lowercase identifier"), ({"when": list}, "has type"),
                              (["customer_id"], "dict of name -> type")):
        with pytest.raises(CaseDefinitionError, match=message):
            type("Broken", (BusinessCase,), {"search_attributes": declared, "Input": BaseModel,
                                             "go": stage(_complete)})


async def _complete(self, ctx):  # type: ignore[no-untyped-def]
    ctx.complete()


def test_filters_are_parsed_by_the_declared_types_and_bad_ones_refused() -> None:
    declared = Tagged.search_attributes
    assert parse_filters(declared, ["items=3", "order_total=2.5", "vip=false"], case="tagged") == (
        ("items", 3), ("order_total", 2.5), ("vip", False))
    for pairs, case in ((["items=three"], "tagged"), (["vip=yes"], "tagged"), (["nope=1"], "tagged"),
                        (["items"], "tagged"), (["items=1"], None)):
        with pytest.raises(InvalidInputError):
            parse_filters(declared, pairs, case=case)
