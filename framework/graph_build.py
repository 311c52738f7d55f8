"""Building a case's execution graph: ``case_graph(case)``, a pure function of the registered class.

A blueprint's graph is exact: its data says every way a step can go (``framework.graph_blueprint``). A Python
case's graph is what its definition states: the stage order (``next()`` with no target, and a reply, a wait or
a join with no ``resume``/``then``), ``on_failed``, and the targets its source names literally
(``next(stage="x")``, ``call(..., resume="x")``, ``wait(..., then="x")``, ``wait_for``, ``fan_out``). A target
computed at run time cannot be read from the source, so such a graph is ``dynamic``: ``framework.graph_trace``
draws the transitions a process really made as ``observed`` edges instead of guessing them.
"""

from __future__ import annotations

from framework.case import BusinessCase, literal_targets
from framework.graph import END, ITEMS_SUFFIX, START, EdgeKind, Graph, GraphBuilder, Node
from framework.graph_blueprint import blueprint_graph

_JUMP_LABELS = {"next": "next", "call": "reply", "wait": "after the wait", "wait_for": "event"}


def case_graph(case: type[BusinessCase]) -> Graph:
    """The graph of a registered case: a blueprint's steps, or a Python case's stages."""
    graph = blueprint_graph(case)
    return graph if graph is not None else code_graph(case)


def code_graph(case: type[BusinessCase]) -> Graph:
    """A Python case's stages in order, their ``on_failed`` paths and the targets their source names."""
    out = GraphBuilder()
    names = {spec.name for spec in case.stages}
    out.node(Node(START, "start", "start", None))
    out.edge(START, case.stages[0].name, EdgeKind.NEXT)
    for spec in case.stages:
        out.node(Node(spec.name, spec.name, "stage", spec.name, optional=spec.optional))
        following = case.stage_after(spec.name)
        out.edge(spec.name, following.name if following else END, EdgeKind.NEXT)
        if spec.on_failed:
            out.edge(spec.name, spec.on_failed, EdgeKind.ON_FAILED, "on_failed")
        for method, target in literal_targets(spec.function):
            if target not in names:  # refused at definition (next/call/wait) or when the stage runs
                continue
            if method == "fan_out":
                items = spec.name + ITEMS_SUFFIX
                if not any(node.id == items for node in out.nodes):
                    out.node(Node(items, "items", "items", None, detail="one task per item"))
                out.edge(spec.name, items, EdgeKind.FAN_OUT)
                out.edge(items, target, EdgeKind.JOIN)
            else:
                out.edge(spec.name, target, EdgeKind.JUMP, _JUMP_LABELS[method])
    out.node(Node(END, "completed", "end", None))
    return out.build(case, "code", dynamic=True)
