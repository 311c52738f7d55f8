"""One process's way through its case's graph, read from its history: what it visited, which edges it took,
where it is now and where it failed.

The history names stages (``stage`` ran and went ``to``); each such move is matched to the graph's edges: a
direct edge (a failure prefers the ``on_failed`` one), else a route through the nodes a stage passes on its
way (a fan-out's items, a parallel level's steps). A move no edge explains is a transition a Python stage
chose at run time: it is added as an ``observed`` edge, so the graph shows what happened, never a guess.
A reply, a wait or an event that resumes another stage moves the process when that stage runs, not when the
wait begins.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from framework.document import ProcessDocument, Status
from framework.graph import END, START, Edge, EdgeKind, Graph
from framework.state import EventWait, FanOutWait, ResendWait, RetryWait, ServiceWait, TimerWait

_DEFERRED = frozenset({"call", "wait", "wait_for"})  # the move happens when the resumed stage runs
_FAILURE_MOVES = frozenset({"on_failed"})
_ENDS_A_WAIT = frozenset({"failed", "on_failed", "skipped", "cancelled"})


@dataclass(frozen=True, slots=True)
class Trace:
    graph: Graph  # the case's graph, plus the observed edges
    visits: Mapping[str, int]  # node id -> times the process reached it
    taken: Mapping[int, int]  # index into graph.edges -> times the process took it
    current: str | None  # where it is: the running or waiting node, the failed one, or the end
    failed: frozenset[str]  # nodes that failed for good (the process's error, or a failure it went on from)


def trace(graph: Graph, doc: ProcessDocument, history: Iterable[Mapping[str, Any]]) -> Trace:
    walk = _Walk(graph)
    last_wait: str | None = None
    for entry in sorted(history, key=lambda e: int(e.get("version", 0))):
        event, stage, to = entry.get("event"), entry.get("stage"), entry.get("to")
        source, target = graph.entry(stage), (END if entry.get("completed") else graph.entry(to))
        if walk.pending is not None and source is not None:
            if source == walk.pending[1] and event != "event":
                walk.flush()  # the resumed stage runs: the reply, the wait or the event did lead there
            elif source == walk.pending[0] and event in _ENDS_A_WAIT:
                walk.pending = None  # the stage that waited failed (or was cancelled) instead
        if event == "started":
            walk.move(START, target, failure=False)
        elif event == "retried":  # an operator's restart: no edge of the case leads there
            walk.pending = None
            walk.enter(target)
        elif event == "fan_out" and source is not None:
            walk.fan_out(source, target)
        elif event == "completed" and source is not None:
            walk.move(source, END, failure=False)
        elif event in _DEFERRED and source is not None and target is not None and target != source:
            walk.pending = (source, target)
        elif source is not None and target is not None and target != source:
            walk.pending = None  # an event's delivery makes the deferred move itself
            walk.move(source, target, failure=event in _FAILURE_MOVES)
        if event == "wait":
            last_wait = source
    failed = {graph.entry(f.stage) for f in doc.failures}
    if doc.status is Status.FAILED and doc.error is not None:
        failed.add(graph.entry(doc.error.stage))
    return Trace(walk.graph(), dict(walk.visits), dict(walk.taken), _current(graph, doc, last_wait),
                 frozenset(node for node in failed if node is not None))


def _current(graph: Graph, doc: ProcessDocument, last_wait: str | None) -> str | None:
    if doc.status is Status.COMPLETED:
        return END
    if doc.status.finished:
        return graph.entry(doc.error.stage if doc.error and doc.error.stage else doc.stage)
    wait = doc.waiting
    if isinstance(wait, TimerWait):
        return START if wait.reason == "start" else last_wait or graph.entry(wait.stage)
    if isinstance(wait, RetryWait):
        return graph.entry(wait.stage)
    if isinstance(wait, FanOutWait):
        fanned = [e.target for e in graph.edges if e.source == wait.from_stage and e.kind is EdgeKind.FAN_OUT]
        return fanned[0] if fanned else graph.entry(wait.from_stage)
    if isinstance(wait, ServiceWait | ResendWait | EventWait):  # a reply, a re-send, an event: the stage that asked
        return graph.entry(wait.from_stage)
    return graph.entry(doc.stage)


class _Walk:
    """The counters of one walk through the graph, and the observed edges it had to add."""

    def __init__(self, graph: Graph) -> None:
        self.base = graph
        self.edges: list[Edge] = list(graph.edges)
        self.visits: Counter[str] = Counter()
        self.taken: Counter[int] = Counter()
        self.pending: tuple[str, str] | None = None
        self.at: str | None = None  # where the last move ended

    def graph(self) -> Graph:
        b = self.base
        return Graph(b.case, b.version, b.source, b.nodes, tuple(self.edges), b.dynamic)

    def enter(self, node: str | None) -> None:
        if node is not None:
            self.visits[node] += 1
            self.at = node

    def take(self, index: int) -> None:
        self.taken[index] += 1
        self.enter(self.edges[index].target)

    def flush(self) -> None:
        if self.pending is not None:
            source, target = self.pending
            self.pending = None
            self.move(source, target, failure=False)

    def fan_out(self, source: str, target: str | None) -> None:
        """The stage started its items (or its parallel steps); a join to another stage moves on at once."""
        starts = [i for i, e in enumerate(self.edges) if e.source == source
                  and e.kind in (EdgeKind.FAN_OUT, EdgeKind.PARALLEL)]
        for index in starts:
            self.take(index)
        if target is not None and target != source:
            self.move(source, target, failure=False)

    def move(self, source: str, target: str | None, *, failure: bool) -> None:
        if target is None:
            return
        if source == START and not self.visits[START]:
            self.enter(START)
        start = self.at if self.at is not None and self._passes(self.at, source) else source  # after a fan-out
        direct = [i for i, e in enumerate(self.edges) if e.source == start and e.target == target]
        if direct:
            preferred = [i for i in direct if (self.edges[i].kind is EdgeKind.ON_FAILED) == failure]
            self.take((preferred or direct)[0])
            return
        route = self._joins(source, target) or self._route(start, source, target)
        if route is None:
            self.edges.append(Edge(source, target, EdgeKind.OBSERVED, "on_failed" if failure else None))
            route = [len(self.edges) - 1]
        for index in route:
            self.taken[index] += 1
        for node in dict.fromkeys(self.edges[i].target for i in route):  # the steps of a level join once
            self.enter(node)

    def _joins(self, source: str, target: str) -> list[int]:
        """A parallel level that joined: every one of its steps goes on to ``target``."""
        steps = {e.target for e in self.edges if e.source == source and e.kind is EdgeKind.PARALLEL}
        return [i for i, e in enumerate(self.edges) if e.source in steps and e.target == target
                and e.kind is EdgeKind.JOIN]

    def _passes(self, node: str, stage: str) -> bool:
        """Whether ``node`` is a place on the way out of ``stage`` (its fan-out items)."""
        return any(e.source == stage and e.target == node and e.kind is EdgeKind.FAN_OUT
                                        for e in self.edges)

    def _route(self, start: str, stage: str, target: str) -> list[int] | None:
        """The shortest way from ``start`` to ``target`` through nodes that belong to no stage or to ``stage``."""
        through = {n.id for n in self.base.nodes if (n.stage is None and n.id not in (START, END)) or n.stage == stage}
        seen: set[str] = {start}
        queue: deque[tuple[str, list[int]]] = deque([(start, [])])
        while queue:
            node, path = queue.popleft()
            for index, edge in enumerate(self.edges):
                if edge.source != node or edge.target in seen or edge.kind is EdgeKind.OBSERVED:
                    continue
                if edge.target == target:
                    return [*path, index]
                if edge.target in through:
                    seen.add(edge.target)
                    queue.append((edge.target, [*path, index]))
        return None
