"""A case is checked when its class is defined, with errors that say how to fix it. No server needed."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from framework import BusinessCase, CaseDefinitionError, InvalidInputError, StageContext, UnknownCaseError, stage
from framework.registry import CaseRegistry


def test_stages_are_collected_in_definition_order() -> None:
    class Ordered(BusinessCase):
        @stage
        async def zeta(self, ctx: StageContext) -> None: ...

        @stage
        async def alpha(self, ctx: StageContext) -> None: ...

        @stage(name="middle")
        async def named(self, ctx: StageContext) -> None: ...

    assert Ordered.name == "ordered"
    assert [s.name for s in Ordered.stages] == ["zeta", "alpha", "middle"]
    assert Ordered.stage_after("zeta").name == "alpha"
    assert Ordered.stage_after("middle") is None


def test_a_stage_that_is_not_async_is_refused() -> None:
    with pytest.raises(CaseDefinitionError, match=r"stage 'sync' must be a coroutine function") as raised:

        class Bad(BusinessCase):
            @stage
            def sync(self, ctx: StageContext) -> None: ...

    assert raised.value.hint == "write `async def sync(self, ctx):`"


def test_two_stages_with_one_name_are_refused() -> None:
    with pytest.raises(CaseDefinitionError, match="two stages are named 'same'"):

        class Bad(BusinessCase):
            @stage(name="same")
            async def one(self, ctx: StageContext) -> None: ...

            @stage(name="same")
            async def two(self, ctx: StageContext) -> None: ...


def test_next_to_an_unknown_stage_is_refused_with_a_suggestion() -> None:
    with pytest.raises(CaseDefinitionError, match="goes to unknown stage 'finsh'") as raised:

        class Bad(BusinessCase):
            @stage
            async def start(self, ctx: StageContext) -> None:
                ctx.next(stage="finsh")

            @stage
            async def finish(self, ctx: StageContext) -> None: ...

    assert "did you mean 'finish'?" in raised.value.hint


def test_call_resuming_an_unknown_stage_is_refused() -> None:
    with pytest.raises(CaseDefinitionError, match="goes to unknown stage 'nowhere'"):

        class Bad(BusinessCase):
            @stage
            async def start(self, ctx: StageContext) -> None:
                ctx.call("api", {}, resume="nowhere")


def test_a_case_without_stages_is_refused_unless_abstract() -> None:
    with pytest.raises(CaseDefinitionError, match="has no stages"):

        class Empty(BusinessCase):
            pass

    class Base(BusinessCase, abstract=True):
        async def helper(self) -> int:
            return 1

    class Concrete(Base):
        @stage
        async def only(self, ctx: StageContext) -> None: ...

    assert [s.name for s in Concrete.stages] == ["only"]


def test_input_model_must_be_pydantic_and_input_errors_name_fields() -> None:
    with pytest.raises(CaseDefinitionError, match="Input must be a pydantic BaseModel"):

        class Bad(BusinessCase):
            Input = dict  # type: ignore[assignment]

            @stage
            async def only(self, ctx: StageContext) -> None: ...

    class Good(BusinessCase):
        class Input(BaseModel):
            qty: int

        @stage
        async def only(self, ctx: StageContext) -> None: ...

    with pytest.raises(InvalidInputError) as raised:
        Good.validate_input({"qty": "many"})
    assert raised.value.errors[0]["field"] == "qty"
    assert Good.validate_input({"qty": "3"}).qty == 3


def test_registry_keeps_versions_apart_and_names_unknown_cases() -> None:
    class V1(BusinessCase):
        name = "flow"
        version = 1

        @stage
        async def a(self, ctx: StageContext) -> None: ...

    class V2(BusinessCase):
        name = "flow"
        version = 2

        @stage
        async def b(self, ctx: StageContext) -> None: ...

    registry = CaseRegistry([V1, V2])
    assert registry.latest("flow") is V2
    assert registry.get("flow", 1) is V1
    with pytest.raises(UnknownCaseError, match="version 3"):
        registry.get("flow", 3)
    with pytest.raises(UnknownCaseError) as raised:
        registry.latest("nope")
    assert raised.value.hint == "registered cases: flow"
