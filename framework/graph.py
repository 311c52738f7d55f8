"""The execution graph of a case, as types: nodes (stages, blueprint steps, markers) and kinds of edges.

Built by ``framework.graph_build.case_graph`` (pure functions of a registered case), overlaid with one
process's path by ``framework.graph_trace``, placed in layers by ``framework.graph_layout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from framework.case import BusinessCase

START = "@start"  # node ids with "@" cannot clash with a stage or step name (lowercase, digits, underscores)
END = "@end"
ITEMS_SUFFIX = "@items"


class EdgeKind(StrEnum):
    NEXT = "next"  # the default way on: the following stage or level
    BRANCH = "branch"  # one way of a choice (a condition's branch or default, an approval's rejection)
    JUMP = "jump"  # a declared jump to a named stage or step
    ON_FAILED = "on_failed"  # where a stage goes when it has failed for good (or its deadline passed)
    FAN_OUT = "fan_out"  # a stage starts its items
    JOIN = "join"  # the items (or parallel steps) joined: on to the target
    PARALLEL = "parallel"  # a level of independent steps starts each one
    OBSERVED = "observed"  # not declared: a process's history shows it (a Python case's run-time target)


@dataclass(frozen=True, slots=True)
class Node:
    """A stage, a blueprint step, or a marker (start, end, the items of a fan-out, a parallel level)."""

    id: str
    label: str
    kind: str  # "start", "end", "stage", "items", "parallel", or a blueprint step's kind ("api_call", ...)
    stage: str | None  # the stage that runs it; None for start, end and fan-out items
    detail: str | None = None  # a short description: the request, the event, the wait...
    optional: bool = False  # a failure goes on along the next edge


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str | None = None  # a branch's condition, a jump's reason


@dataclass(frozen=True, slots=True)
class Graph:
    case: str
    version: int
    source: Literal["code", "blueprint"]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    dynamic: bool  # some transitions are decided by Python at run time and may be missing
    _by_id: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {node.id: node for node in self.nodes})

    def node(self, node_id: str | None) -> Node | None:
        return self._by_id.get(node_id) if node_id is not None else None

    def entry(self, stage: str | None) -> str | None:
        """The node a stage starts at: the stage itself, a blueprint step, or a parallel level's fork."""
        return stage if stage is not None and stage in self._by_id else None


class GraphBuilder:
    """Collects nodes and edges in order, once each (a jump to the next stage is still drawn once)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []

    def node(self, node: Node) -> None:
        self.nodes.append(node)

    def edge(self, source: str, target: str, kind: EdgeKind, label: str | None = None) -> None:
        edge = Edge(source, target, kind, label)
        if edge not in self.edges:
            self.edges.append(edge)

    def build(self, case: type[BusinessCase], source: Literal["code", "blueprint"], *, dynamic: bool) -> Graph:
        return Graph(case.name, case.version, source, tuple(self.nodes), tuple(self.edges), dynamic)
