"""What the graph endpoints return: a case's execution graph laid out in ranks, with one process's path on it.

The models document the response in the OpenAPI schema; ``graph_view`` is a pure function of the graph, its
layout and (for a process) its trace.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from framework.graph import EdgeKind, Graph
from framework.graph_layout import layout
from framework.graph_trace import Trace


class GraphNode(BaseModel):
    id: str
    label: str
    kind: str = Field(description="start, end, stage, items, parallel, or a blueprint step's kind (api_call, ...)")
    stage: str | None = Field(description="the stage that runs it (a parallel level's steps share one)")
    detail: str | None = None
    optional: bool = False
    rank: int = Field(description="its layer, from the top")
    x: float = Field(description="its slot in the layer, from the left")
    visits: int = Field(0, description="how often the process reached it")
    failed: bool = Field(False, description="the process failed here for good (and stopped, or went on)")


class GraphEdge(BaseModel):
    source: str
    target: str
    kind: EdgeKind = Field(description="observed: not declared; a process's history shows it")
    label: str | None = Field(None, description="a branch's condition, a jump's reason")
    points: list[tuple[int, float]] = Field(description="(rank, x) waypoints between source and target")
    back: bool = Field(description="it goes up against the ranks (a loop or a jump back)")
    taken: int = Field(0, description="how often the process took it")


class ProcessMark(BaseModel):
    process_id: str
    status: str
    current: str | None = Field(description="the node it is at: running, waiting, failed, or the end")


class GraphView(BaseModel):
    case: str
    version: int
    source: Literal["code", "blueprint"]
    dynamic: bool = Field(description="a Python case: transitions chosen at run time are drawn only as observed")
    ranks: int
    width: float
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    process: ProcessMark | None = None


def graph_view(graph: Graph, trace: Trace | None = None, *, process_id: str | None = None,
               status: str | None = None) -> GraphView:
    shown = trace.graph if trace is not None else graph
    placed = layout(shown)
    visits = trace.visits if trace is not None else {}
    taken = trace.taken if trace is not None else {}
    failed = trace.failed if trace is not None else frozenset()
    nodes = [
        GraphNode(id=n.id, label=n.label, kind=n.kind, stage=n.stage, detail=n.detail, optional=n.optional,
                  rank=placed.nodes[n.id][0], x=placed.nodes[n.id][1], visits=visits.get(n.id, 0),
                  failed=n.id in failed)
        for n in shown.nodes
    ]
    edges = [
        GraphEdge(source=e.source, target=e.target, kind=e.kind, label=e.label, points=list(placed.waypoints[i]),
                  back=placed.reversed[i], taken=taken.get(i, 0))
        for i, e in enumerate(shown.edges)
    ]
    mark = None
    if trace is not None and process_id is not None:
        mark = ProcessMark(process_id=process_id, status=status or "", current=trace.current)
    return GraphView(case=shown.case, version=shown.version, source=shown.source, dynamic=shown.dynamic,
                     ranks=placed.ranks, width=placed.width, nodes=nodes, edges=edges, process=mark)
