"""A layered layout of an execution graph (top to bottom), simple enough to read and good enough for 40 nodes.

* Ranks: the longest path from the start over the edges that go forward in the graph's node order (a stage's
  or step's declared order); an edge back up (a loop, a jump to an earlier step) is laid out reversed.
* An edge across several ranks passes through one waypoint per rank between, which holds a slot like a node,
  so edges go around nodes rather than through them.
* Order within a rank: a few sweeps down and up that sort each rank by the mean position of its neighbours
  in the rank before (the barycenter heuristic), keeping the order with the fewest crossings seen.
* Positions: each rank is packed left to right towards its neighbours' mean, one slot apart, so a chain of
  stages is a straight column.

Coordinates are in slots (x) and ranks (y); the page multiplies them by its own spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from framework.graph import START, Graph

_SWEEPS = 6
Point = tuple[int, float]  # (rank, x)


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: dict[str, Point]  # node id -> (rank, x)
    waypoints: tuple[tuple[Point, ...], ...]  # per edge of graph.edges, from its source to its target
    reversed: tuple[bool, ...]  # per edge: it goes up (against the ranks), or it is a loop on one node
    ranks: int
    width: float  # the widest x + 1


def layout(graph: Graph) -> Layout:
    index = {node.id: i for i, node in enumerate(graph.nodes)}
    oriented: list[tuple[str, str]] = []  # each edge as it is laid out: from the lower index to the higher
    for edge in graph.edges:
        a, b = index[edge.source], index[edge.target]
        oriented.append((edge.source, edge.target) if a <= b else (edge.target, edge.source))
    rank = _ranks(graph, index, oriented)
    layers: list[list[str]] = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for node in graph.nodes:
        layers[rank[node.id]].append(node.id)
    chains: list[list[str]] = []  # per edge: the keys from its upper end to its lower end
    for number, (upper, lower) in enumerate(oriented):
        chain = [upper]
        for r in range(rank[upper] + 1, rank[lower]):
            dummy = f"#{number}:{r}"
            layers[r].append(dummy)
            rank[dummy] = r
            chain.append(dummy)
        chains.append([*chain, lower] if upper != lower else chain)
    links = [pair for chain in chains for pair in pairwise(chain)]
    layers = _order(layers, links, rank)
    x = _positions(layers, links)
    waypoints = []
    for edge, chain in zip(graph.edges, chains, strict=True):
        points = tuple((rank[key], x[key]) for key in chain[1:-1])
        waypoints.append(points if edge.source == chain[0] else tuple(reversed(points)))
    flipped = tuple(index[e.source] >= index[e.target] for e in graph.edges)
    width = max(x.values(), default=0.0) + 1
    return Layout({n.id: (rank[n.id], x[n.id]) for n in graph.nodes}, tuple(waypoints), flipped, len(layers), width)


def _ranks(graph: Graph, index: dict[str, int], oriented: list[tuple[str, str]]) -> dict[str, int]:
    """Longest path over the forward edges; node order is a topological order of them by construction. A node
    nothing leads to (reached only by a jump back) sits one rank below the node declared before it."""
    incoming: dict[str, list[str]] = {}
    for upper, lower in oriented:
        if upper != lower:
            incoming.setdefault(lower, []).append(upper)
    rank: dict[str, int] = {}
    previous: str | None = None
    for node in sorted(graph.nodes, key=lambda n: index[n.id]):
        sources = incoming.get(node.id)
        if sources:
            rank[node.id] = 1 + max(rank[s] for s in sources)
        else:
            rank[node.id] = 0 if node.id == START or previous is None else rank[previous] + 1
        previous = node.id
    return rank


def _order(layers: list[list[str]], links: list[tuple[str, str]], rank: dict[str, int]) -> list[list[str]]:
    down: dict[str, list[str]] = {}
    up: dict[str, list[str]] = {}
    for upper, lower in links:
        down.setdefault(upper, []).append(lower)
        up.setdefault(lower, []).append(upper)
    best, best_crossings = [list(layer) for layer in layers], _crossings(layers, links, rank)
    current = [list(layer) for layer in layers]
    for sweep in range(_SWEEPS):
        downwards = sweep % 2 == 0
        neighbours = up if downwards else down
        for r in range(1, len(current)) if downwards else range(len(current) - 2, -1, -1):
            where = {key: i for i, key in enumerate(current[r - 1] if downwards else current[r + 1])}
            keyed = []
            for at, key in enumerate(current[r]):
                near = [where[n] for n in neighbours.get(key, []) if n in where]
                keyed.append((sum(near) / len(near) if near else float(at), at, key))
            current[r] = [key for _, _, key in sorted(keyed)]
        crossings = _crossings(current, links, rank)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in current], crossings
    return best


def _crossings(layers: list[list[str]], links: list[tuple[str, str]], rank: dict[str, int]) -> int:
    """Pairs of links between the same two ranks whose ends are in opposite orders."""
    position = {key: i for layer in layers for i, key in enumerate(layer)}
    total = 0
    for i, (a, b) in enumerate(links):
        for c, d in links[i + 1:]:
            crossed = (position[a] - position[c]) * (position[b] - position[d]) < 0
            if crossed and rank[a] == rank[c] and a != c and b != d:
                total += 1
    return total


def _positions(layers: list[list[str]], links: list[tuple[str, str]]) -> dict[str, float]:
    """Slots: each rank packed one apart towards the mean x of its neighbours, alternating down and up."""
    widest = max((len(layer) for layer in layers), default=1)
    x = {key: i + (widest - len(layer)) / 2 for layer in layers for i, key in enumerate(layer)}
    near: dict[str, list[str]] = {}
    for upper, lower in links:
        near.setdefault(upper, []).append(lower)
        near.setdefault(lower, []).append(upper)
    for sweep in range(4):
        for layer in layers if sweep % 2 == 0 else reversed(layers):
            wanted = [sum(x[n] for n in near[k]) / len(near[k]) if near.get(k) else x[k] for k in layer]
            placed: list[float] = []
            for want in wanted:
                placed.append(want if not placed else max(want, placed[-1] + 1))
            shift = (sum(wanted) - sum(placed)) / len(placed) if placed else 0.0
            for key, value in zip(layer, placed, strict=True):
                x[key] = value + shift
    low = min(x.values(), default=0.0)
    return {key: round(value - low, 3) for key, value in x.items()}
