"""The execution graph (framework/graph*.py): built from Python cases and blueprints, traced along real
histories (processes run by the in-memory harness), and laid out in ranks without overlaps."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from business_cases.blueprint_functions import FUNCTIONS
from framework import BusinessCase, stage
from framework.blueprint import compile_blueprint
from framework.case import EmptyInput
from framework.context import StageContext
from framework.errors import ServiceError
from framework.graph import END, START, Edge, EdgeKind, Graph, Node
from framework.graph_build import case_graph, code_graph
from framework.graph_layout import layout
from framework.graph_trace import trace
from framework.messages import ServiceCommand
from framework.service import ServiceTransaction
from framework.testing import run_cases
from tests.support.cases import Jumper

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "support" / "blueprints" / "graph_demo.yaml"
APPROVAL = ROOT / "business_cases" / "blueprints" / "discount_approval.yaml"


class Router(BusinessCase):
    """A run-time jump (the target comes from the input), an on_failed path and a fan-out with a join."""

    name = "graph_router"

    class Input(BaseModel):
        where: str

    @stage(on_failed="recover")
    async def pick(self, ctx: StageContext) -> None:
        if ctx.input.where == "boom":
            raise RuntimeError("boom")
        ctx.next(stage=ctx.input.where)

    @stage
    async def spread(self, ctx: StageContext) -> None:
        ctx.fan_out([{"process_id": "x", "step": i} for i in range(3)], api="effects", resume="last")

    @stage
    async def last(self, ctx: StageContext) -> None:
        ctx.complete({"items": ctx.fan_in.total if ctx.fan_in else 0})

    @stage
    async def recover(self, ctx: StageContext) -> None:
        ctx.complete({"recovered": True})


async def effects(command: ServiceCommand, tx: ServiceTransaction) -> dict[str, Any]:
    if command.payload.get("step") == 1 and command.payload.get("process_id") == "refuse":
        raise ServiceError("the reviewer refuses", retryable=False)
    return {"ok": True}


def edges(graph: Graph) -> set[tuple[str, str, str, str | None]]:
    return {(e.source, e.target, e.kind.value, e.label) for e in graph.edges}


def taken(result: Any) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind.value) for i, e in enumerate(result.graph.edges) if result.taken.get(i)}


# -- building ------------------------------------------------------------------------------------------------


def test_a_python_case_is_its_stage_order_with_its_declared_jumps_and_failure_paths() -> None:
    graph = code_graph(Jumper)
    assert graph.source == "code" and graph.dynamic
    assert [n.id for n in graph.nodes] == [START, "first", "second", "third", "fourth", END]
    assert edges(graph) == {
        (START, "first", "next", None), ("first", "second", "next", None), ("second", "third", "next", None),
        ("third", "fourth", "next", None), ("fourth", END, "next", None),
        ("first", "third", "jump", "next"),  # ctx.next(stage="third")
        ("third", "fourth", "jump", "reply"),  # ctx.call(..., resume="fourth")
    }
    router = code_graph(Router)
    assert ("pick", "recover", "on_failed", "on_failed") in edges(router)
    assert {("spread", "spread@items", "fan_out", None), ("spread@items", "last", "join", None)} <= edges(router)
    assert not any(e[0] == "pick" and e[1] == "last" for e in edges(router))  # a run-time target: not guessed


def test_a_blueprint_is_its_steps_with_branches_jumps_on_failed_parallel_steps_and_a_fan_out() -> None:
    graph = case_graph(compile_blueprint(str(DEMO)))
    assert graph.source == "blueprint" and not graph.dynamic
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds == {START: "start", "classify": "condition", "review": "call", "quick": "transform",
                     "parallel_tell_a": "parallel", "tell_a": "call", "tell_b": "call", "each_line": "fan_out",
                     "each_line@items": "items", "finish": "complete", "rejected": "fail", END: "end"}
    assert {n.id: n.stage for n in graph.nodes if n.id.startswith("tell_")} == {
        "tell_a": "parallel_tell_a", "tell_b": "parallel_tell_a"}  # the level's stage, as the history names it
    assert edges(graph) == {
        (START, "classify", "next", None),
        ("classify", "review", "branch", "input.amount > `100`"), ("classify", "quick", "branch", "else"),
        ("review", "each_line", "jump", "next"), ("review", "rejected", "on_failed", "on_failed"),
        ("quick", "parallel_tell_a", "next", None),
        ("parallel_tell_a", "tell_a", "parallel", None), ("parallel_tell_a", "tell_b", "parallel", None),
        ("tell_a", "each_line", "join", None), ("tell_b", "each_line", "join", None),
        ("each_line", "each_line@items", "fan_out", "input.lines"), ("each_line@items", "finish", "join", None),
        ("finish", END, "next", "complete"),
    }  # the fail step has no way on


def test_approvals_and_event_waits_show_their_decisions_and_deadlines() -> None:
    graph = case_graph(compile_blueprint(str(APPROVAL)))
    assert edges(graph) == {
        (START, "manager", "next", None),
        ("manager", "customer", "next", "approved"), ("manager", "refused", "branch", "rejected"),
        ("manager", "expired", "on_failed", "on_expiry"),
        ("customer", "granted", "next", None), ("customer", "expired", "on_failed", "on_failed"),
        ("granted", END, "next", "complete"), ("refused", END, "next", "complete"),
        ("expired", END, "next", "complete"),
    }
    assert {n.id: n.detail for n in graph.nodes}["customer"] == "event offer_accepted"


def test_every_shipped_blueprint_reads_as_the_compiler_groups_it() -> None:
    for path in sorted((ROOT / "business_cases" / "blueprints").glob("*.yaml")):
        case = compile_blueprint(str(path), functions=FUNCTIONS)
        graph = case_graph(case)
        assert graph.source == "blueprint", path  # a disagreement with the compiler would fall back to "code"
        staged = {n.stage for n in graph.nodes if n.stage is not None}
        assert staged == {spec.name for spec in case.stages}, path


# -- tracing real runs -----------------------------------------------------------------------------------------


async def test_a_blueprint_run_lights_its_branch_its_parallel_steps_and_its_fan_out() -> None:
    case = compile_blueprint(str(DEMO))
    async with run_cases([case], services={"effects": effects}) as env:
        doc = await env.run(case, {"ref": "small", "amount": 5, "lines": [7, 8]})
        _, history = await env.flow.get_with_history(doc.process_id)
    graph = case_graph(case)
    result = trace(graph, doc, history)
    assert doc.status.value == "completed" and result.current == END and not result.failed
    assert set(result.visits) == {START, "classify", "quick", "parallel_tell_a", "tell_a", "tell_b", "each_line",
                                  "each_line@items", "finish", END}
    assert taken(result) == {
        (START, "classify", "next"), ("classify", "quick", "branch"), ("quick", "parallel_tell_a", "next"),
        ("parallel_tell_a", "tell_a", "parallel"), ("parallel_tell_a", "tell_b", "parallel"),
        ("tell_a", "each_line", "join"), ("tell_b", "each_line", "join"),
        ("each_line", "each_line@items", "fan_out"), ("each_line@items", "finish", "join"), ("finish", END, "next"),
    }
    assert set(result.visits.values()) == {1}  # the two parallel steps join each_line once
    assert result.graph.edges == graph.edges  # everything it did was declared: nothing observed


async def test_a_failed_call_takes_its_on_failed_path_and_the_failures_are_marked() -> None:
    case = compile_blueprint(str(DEMO))
    async with run_cases([case], services={"effects": effects}) as env:
        doc = await env.run(case, {"ref": "refuse", "amount": 500}, raise_on_failure=False)
        _, history = await env.flow.get_with_history(doc.process_id)
    result = trace(case_graph(case), doc, history)
    assert doc.status.value == "failed" and doc.error is not None and doc.error.stage == "rejected"
    assert result.current == "rejected" and result.failed == {"review", "rejected"}
    assert taken(result) == {(START, "classify", "next"), ("classify", "review", "branch"),
                             ("review", "rejected", "on_failed")}
    assert "quick" not in result.visits and END not in result.visits


async def test_a_run_time_jump_is_drawn_as_observed_and_a_join_goes_through_the_items() -> None:
    async with run_cases([Router], services={"effects": effects}) as env:
        jumped = await env.run(Router, {"where": "last"})
        spread = await env.run(Router, {"where": "spread"})
        failed = await env.run(Router, {"where": "boom"})
        histories = [(await env.flow.get_with_history(d.process_id))[1] for d in (jumped, spread, failed)]
    graph = code_graph(Router)
    first = trace(graph, jumped, histories[0])
    observed = [e for e in first.graph.edges if e.kind is EdgeKind.OBSERVED]
    # `last` is not the last stage: its ctx.complete() is a run-time choice too
    assert observed == [Edge("pick", "last", EdgeKind.OBSERVED), Edge("last", END, EdgeKind.OBSERVED)]
    assert ("pick", "last", "observed") in taken(first) and "spread" not in first.visits
    second = trace(graph, spread, histories[1])
    assert {("pick", "spread", "next"), ("spread", "spread@items", "fan_out"), ("spread@items", "last", "join"),
            ("last", END, "observed")} == taken(second) - {(START, "pick", "next")}
    assert ("spread", "last", "next") not in taken(second)  # the join resumed it, not next()
    third = trace(graph, failed, histories[2])
    assert ("pick", "recover", "on_failed") in taken(third) and third.failed == {"pick"}
    assert ("recover", END, "next") in taken(third)  # the last stage: completing there is the way on
    assert third.current == END


async def test_a_waiting_process_is_at_the_stage_that_asked_and_the_reply_is_not_taken_yet() -> None:
    async with run_cases([Jumper]) as env:  # no `effects` service: the call waits
        doc = await env.run(Jumper, {"word": "hi"})
        _, history = await env.flow.get_with_history(doc.process_id)
    result = trace(code_graph(Jumper), doc, history)
    assert doc.status.value == "waiting" and result.current == "third"
    assert "fourth" not in result.visits and "second" not in result.visits
    assert taken(result) == {(START, "first", "next"), ("first", "third", "jump")}


# -- layout ------------------------------------------------------------------------------------------------------


def _check_no_overlap(graph: Graph) -> None:
    placed = layout(graph)
    rank = {key: r for key, (r, _) in placed.nodes.items()}
    for (r, x), other in pairwise(sorted(placed.nodes.values())):
        assert other[0] != r or other[1] - x >= 1 - 1e-6, (r, x, other)
    for edge, points, back in zip(graph.edges, placed.waypoints, placed.reversed, strict=True):
        ranks = [rank[edge.source], *(p[0] for p in points), rank[edge.target]]
        step = -1 if back else 1
        if edge.source != edge.target:
            assert ranks == list(range(ranks[0], ranks[-1] + step, step)), (edge, ranks)  # one rank at a time


def test_layout_ranks_by_longest_path_and_keeps_a_chain_straight() -> None:
    graph = case_graph(compile_blueprint(str(DEMO)))
    placed = layout(graph)
    rank = {key: r for key, (r, _) in placed.nodes.items()}
    assert rank[START] == 0 and rank["classify"] == 1 and rank["review"] == rank["quick"] == 2
    assert rank["each_line"] == 5 and rank[END] == 8  # after the parallel level's fork and its steps
    _check_no_overlap(graph)
    chain = layout(code_graph(_chain(40)))
    assert chain.ranks == 42 and len({x for _, x in chain.nodes.values()}) == 1


def test_layout_orders_a_rank_to_avoid_crossings_and_routes_long_and_back_edges() -> None:
    nodes = tuple(Node(i, i, "stage", i) for i in (START, "a", "b", "c", "d", END))
    crossed = Graph("g", 1, "code", nodes, (
        Edge(START, "a", EdgeKind.NEXT), Edge(START, "b", EdgeKind.NEXT), Edge("a", "d", EdgeKind.NEXT),
        Edge("b", "c", EdgeKind.NEXT), Edge("c", END, EdgeKind.NEXT), Edge("d", END, EdgeKind.NEXT),
        Edge(START, END, EdgeKind.JUMP), Edge("d", "a", EdgeKind.JUMP)), dynamic=False)
    placed = layout(crossed)
    x = {key: value for key, (_, value) in placed.nodes.items()}
    assert (x["a"] < x["b"]) == (x["d"] < x["c"])  # a→d and b→c do not cross
    long, back = placed.waypoints[6], placed.waypoints[7]
    assert [r for r, _ in long] == [1, 2] and not placed.reversed[6]
    assert placed.reversed[7] and back == ()  # d and a are one rank apart: drawn as a curve back up
    _check_no_overlap(crossed)


def test_a_forty_step_blueprint_with_branches_lays_out_without_overlaps() -> None:
    steps: list[dict[str, Any]] = []
    for i in range(40):
        if i % 5 == 0 and i + 3 < 40:
            steps.append({"name": f"s{i}", "kind": "condition", "default": f"s{i + 1}",
                          "branches": [{"if": f"input.n > `{i}`", "goto": f"s{i + 3}"}]})
        else:
            steps.append({"name": f"s{i}", "kind": "transform", "set": {f"v{i}": "`1`"}})
    case = compile_blueprint({"name": "wide", "version": 1, "input": {"n": {"type": "integer"}}, "steps": steps})
    graph = case_graph(case)
    assert len(graph.nodes) == 42
    _check_no_overlap(graph)


def _chain(n: int) -> type[BusinessCase]:
    def make() -> Any:
        async def run(self: Any, ctx: StageContext) -> None:
            ctx.next()

        return run

    attrs: dict[str, Any] = {"name": f"chain_{n}", "Input": EmptyInput}
    attrs.update({f"s{i}": stage(make(), name=f"s{i}") for i in range(n)})
    return type(f"Chain{n}", (BusinessCase,), attrs)


def test_db_query_and_notify_steps_are_nodes_of_their_kind_with_their_ways_on() -> None:
    restock = ROOT / "business_cases" / "blueprints" / "restock_order.yaml"
    case = compile_blueprint(str(restock), functions=FUNCTIONS)
    graph = case_graph(case)
    kinds = {n.kind for n in graph.nodes}
    assert {"db_query", "notify"} & kinds, kinds
    for node in graph.nodes:
        if node.kind in ("db_query", "notify"):
            assert node.detail and any(e.source == node.id for e in graph.edges), node
