"""A blueprint's execution graph, read from the checked data a compiled blueprint class keeps (``blueprint``).

Every step is a node; its edges are the ways the compiler makes it go (``framework.blueprint.compiler``): on to
the next level or its ``next``, a condition's branches and default, an approval's rejection, the failure path
(``on_expiry`` or else ``on_failed``), a fan-out's items and their join. A level of independent steps is a fork
node (the level's stage, which the history names) with a ``parallel`` edge to each step and a ``join`` edge from
each step on. Only the blueprint's data is read, never changed: the levels are recomputed here by the loader's
rule and checked against the class's stages, so a reader that disagrees with the compiler falls back to the
stage graph rather than draw a wrong one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.case import BusinessCase
from framework.graph import END, ITEMS_SUFFIX, START, EdgeKind, Graph, GraphBuilder, Node

_DETAIL_CHARS = 80

Step = Mapping[str, Any]


def blueprint_graph(case: type[BusinessCase]) -> Graph | None:
    """The graph of a compiled blueprint; None for a Python case (or data this reader does not follow)."""
    data = getattr(case, "blueprint", None)
    if not isinstance(data, Mapping) or not isinstance(data.get("steps"), list):
        return None
    levels = blueprint_levels(data["steps"])
    if [stage for stage, _ in levels] != [spec.name for spec in case.stages]:
        return None
    entry = {step["name"]: (stage if len(steps) > 1 else step["name"]) for stage, steps in levels for step in steps}
    out = GraphBuilder()
    out.node(Node(START, "start", "start", None))
    out.edge(START, levels[0][0], EdgeKind.NEXT)
    for index, (stage, steps) in enumerate(levels):
        following = levels[index + 1][0] if index + 1 < len(levels) else END
        if len(steps) > 1:
            out.node(Node(stage, "parallel", "parallel", stage, detail=f"{len(steps)} steps at once"))
            for step in steps:
                out.node(_node(step, stage))
                out.edge(stage, step["name"], EdgeKind.PARALLEL)
                out.edge(step["name"], following, EdgeKind.JOIN)
        else:
            _single(out, steps[0], following, entry)
    out.node(Node(END, "completed", "end", None))
    return out.build(case, "blueprint", dynamic=False)


def blueprint_levels(steps: list[Step]) -> list[tuple[str, list[Step]]]:
    """(stage, steps) per level, as the loader groups them: a step's level is one more than the deepest step it
    depends on (by default the step before it); several steps on one level run as ``parallel_<first>``."""
    level_of: dict[str, int] = {}
    for index, step in enumerate(steps):
        deps = step["depends_on"] if "depends_on" in step else ([steps[index - 1]["name"]] if index else [])
        level_of[step["name"]] = 1 + max((level_of.get(d, -1) for d in deps), default=-1)
    by_level: dict[int, list[Step]] = {}
    for step in steps:
        by_level.setdefault(level_of[step["name"]], []).append(step)
    return [(members[0]["name"] if len(members) == 1 else f"parallel_{members[0]['name']}"[:63], members)
            for _, members in sorted(by_level.items())]


def _single(out: GraphBuilder, step: Step, following: str, entry: dict[str, str]) -> None:
    """A step on a level of its own, and its ways on (the compiler's ``_level_stage`` and step bodies)."""
    name, kind = step["name"], step["kind"]
    out.node(_node(step, name))
    target = entry[step["next"]] if "next" in step else following
    on = EdgeKind.JUMP if "next" in step else EdgeKind.NEXT
    if kind == "complete":
        out.edge(name, END, EdgeKind.NEXT, "complete")
    elif kind == "fail":
        pass  # the process fails here: no way on
    elif kind == "condition":
        for branch in step["branches"]:
            out.edge(name, entry[branch["goto"]], EdgeKind.BRANCH, branch["if"])
        out.edge(name, entry[step["default"]] if "default" in step else target, EdgeKind.BRANCH, "else")
    elif kind == "approval":
        out.edge(name, target, on, "approved")
        if "on_reject" in step:
            out.edge(name, entry[step["on_reject"]], EdgeKind.BRANCH, "rejected")
    elif kind == "fan_out":
        items = name + ITEMS_SUFFIX
        out.node(Node(items, "items", "items", None, detail=_clip(_items_detail(step))))
        out.edge(name, items, EdgeKind.FAN_OUT, _clip(str(step["items"])))
        out.edge(items, target, EdgeKind.JOIN, "next" if "next" in step else None)
    else:
        out.edge(name, target, on, "next" if "next" in step else None)
    failed_to = step.get("on_expiry") or step.get("on_failed")  # the compiler's order: one failure path
    if failed_to:
        out.edge(name, entry[failed_to], EdgeKind.ON_FAILED, "on_expiry" if step.get("on_expiry") else "on_failed")


def _node(step: Step, stage: str) -> Node:
    return Node(step["name"], step["name"], str(step["kind"]), stage, detail=_clip(_detail(step)),
                optional=bool(step.get("optional")))


def _detail(step: Step) -> str | None:
    kind = step["kind"]
    request = step.get("request")
    if isinstance(request, Mapping) and kind == "api_call":
        return f"{request.get('method', 'GET')} {request.get('url')}"
    if kind == "call":
        return f"api {step.get('api')}"
    if kind == "wait":
        return f"{step['seconds']} s" if "seconds" in step else f"until {step.get('until')}"
    if kind == "wait_for_event":
        return f"event {step.get('event')}"
    if kind == "approval":
        return f"by {step['assignee']}" if "assignee" in step else "approval"
    if kind == "db_query":
        return f"{step.get('mode', 'query')} on {step.get('connection')}"
    if kind == "notify":
        return f"notify by {step.get('channel')}"
    return None  # a kind this reader does not describe still gets its node and its edges


def _items_detail(step: Step) -> str:
    if isinstance(step.get("call"), Mapping):
        return f"each item: api {step['call'].get('api')}"
    if isinstance(step.get("case"), Mapping):
        return f"each item: case {step['case'].get('name')}"
    request = step.get("request")
    return f"each item: {request.get('method', 'GET')} {request.get('url')}" if isinstance(request, Mapping) \
        else "each item"


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _DETAIL_CHARS:
        return text
    return text[: _DETAIL_CHARS - 1] + "…"
