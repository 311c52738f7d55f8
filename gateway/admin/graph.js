// Stageflow admin page: a case's execution graph as inline SVG (no library, no build step). The gateway lays
// it out (GET /cases/{case}/graph, GET /processes/{id}/graph: ranks and slots); this file only draws it.
// Like app.js, every value reaches the DOM through textContent or setAttribute, never as markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COL = 146, ROW = 62, NW = 128, NH = 38, PAD = 14, BACK = 34;  // px: slot, rank, node, margins
  const MIN_SCALE = 0.7;  // a wide graph shrinks to fit its box down to this, then scrolls
  const KINDS = [
    ["next", "next"], ["branch", "branch (condition)"], ["jump", "jump"], ["on_failed", "on failure"],
    ["fan_out", "fan-out"], ["join", "join"], ["parallel", "parallel"], ["observed", "observed at run time"],
  ];

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function text(attrs, value) { const t = svg("text", attrs); t.textContent = value; return t; }
  function title(value) { const t = svg("title"); t.textContent = value; return t; }
  function html(tag, cls, value) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (value !== undefined) node.textContent = value;
    return node;
  }
  const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

  const cx = (x) => PAD + x * COL + NW / 2;
  const cy = (rank) => PAD + rank * ROW + NH / 2;

  // a smooth path through points, vertical tangents (top to bottom) or as given
  function through(points) {
    let d = `M ${points[0][0]} ${points[0][1]}`;
    for (let i = 1; i < points.length; i++) {
      const [x0, y0] = points[i - 1], [x1, y1] = points[i];
      const my = (y0 + y1) / 2;
      d += ` C ${x0} ${my} ${x1} ${my} ${x1} ${y1}`;
    }
    return d;
  }

  function edgePath(edge, at) {
    const s = at[edge.source], t = at[edge.target];
    const mid = edge.points.map(([rank, x]) => [cx(x), cy(rank)]);
    if (edge.source === edge.target) {  // a loop on one node, on its right
      const x = s.x + NW / 2, y = s.y;
      return { d: `M ${x} ${y - 7} C ${x + BACK} ${y - 22} ${x + BACK} ${y + 22} ${x} ${y + 7}`, label: [x + BACK, y] };
    }
    if (edge.back) {  // up against the ranks: leaves and enters on the right, around the column
      const start = [s.x + NW / 2, s.y], end = [t.x + NW / 2, t.y];
      if (!mid.length) {
        const bend = Math.max(start[0], end[0]) + BACK;
        return { d: `M ${start[0]} ${start[1]} C ${bend} ${start[1]} ${bend} ${end[1]} ${end[0]} ${end[1]}`,
          label: [bend - 6, (start[1] + end[1]) / 2] };
      }
      const pts = [start, ...mid, end];
      return { d: through(pts), label: pts[1] };
    }
    const pts = [[s.x, s.y + NH / 2], ...mid, [t.x, t.y - NH / 2]];
    const a = pts[0], b = pts[1];  // a third of the way to the next point: the branches of one node part there
    return { d: through(pts), label: [(a[0] + 2 * b[0]) / 3, (a[1] + 2 * b[1]) / 3] };
  }

  function markers() {
    const defs = svg("defs");
    for (const [kind] of [...KINDS, ["taken"]]) {
      defs.append(svg("marker", { id: `gm-${kind}`, class: `gm gm-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerUnits: "userSpaceOnUse", markerWidth: 9, markerHeight: 9, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" })));
    }
    return defs;
  }

  function nodeTitle(n, process) {
    const parts = [`${n.label} (${n.kind})`];
    if (n.detail) parts.push(n.detail);
    if (n.optional) parts.push("optional");
    if (process) {
      parts.push(n.visits ? `reached ${n.visits} time${n.visits > 1 ? "s" : ""}` : "not reached");
      if (n.failed) parts.push("failed here");
      if (process.current === n.id) parts.push(`the process is here (${process.status})`);
    }
    return parts.join(" · ");
  }

  function drawNode(n, at, process) {
    const { x, y } = at[n.id];
    const cls = ["gnode", `k-${n.kind}`];
    if (process && n.visits) cls.push("visited");
    if (n.failed) cls.push("failed");
    if (n.optional) cls.push("optional");
    const current = process && process.current === n.id;
    if (current) cls.push("current");
    const round = n.kind === "start" || n.kind === "end" ? NH / 2 : n.kind === "items" || n.kind === "parallel" ? 14 : 6;
    const g = svg("g", { class: cls.join(" "), "data-node": n.id, "data-kind": n.kind, "data-visits": n.visits,
      "data-failed": n.failed ? "true" : null, "data-current": current ? "true" : null,
      transform: `translate(${x - NW / 2} ${y - NH / 2})` }, title(nodeTitle(n, process)));
    if (current) g.append(svg("rect", { class: "ring", x: -4, y: -4, width: NW + 8, height: NH + 8, rx: round + 4 }));
    g.append(svg("rect", { class: "box", width: NW, height: NH, rx: round }));
    const marker = n.kind === "start" || n.kind === "end" || n.kind === "parallel" || n.kind === "items";
    g.append(text({ class: "name", x: NW / 2, y: marker ? NH / 2 + 4 : 15 }, clip(n.label, 16)));
    if (!marker) g.append(text({ class: "kind", x: NW / 2, y: 30 }, clip(n.kind + (n.optional ? " · optional" : ""), 22)));
    if (n.visits > 1) g.append(text({ class: "visits", x: NW - 4, y: -3 }, `×${n.visits}`));
    if (current) g.append(text({ class: "now", x: -8, y: NH / 2 + 4 }, "▶"));
    return g;
  }

  function legend(graph) {
    const box = html("div", "graph-legend");
    box.setAttribute("aria-label", "legend");
    const present = new Set(graph.edges.map((e) => e.kind));
    for (const [kind, name] of KINDS) {
      if (!present.has(kind)) continue;
      const item = html("span", "item");
      item.append(svg("svg", { class: "graph mini", width: 26, height: 10, "aria-hidden": "true" },
        svg("line", { x1: 1, y1: 5, x2: 25, y2: 5, class: `gedge e-${kind}` })), html("span", "", name));
      box.append(item);
    }
    if (graph.process) {
      for (const [cls, name] of [["visited", "visited"], ["path", "path taken"], ["current", "now here"], ["failed", "failed"]]) {
        const item = html("span", `item state-${cls}`);
        item.append(html("span", `swatch ${cls}`), html("span", "", name));
        box.append(item);
      }
    }
    if (graph.dynamic) {
      box.append(html("span", "note muted", "Python stages choose some ways at run time: those a process took show as observed."));
    }
    return box;
  }

  // ``graph`` is a GraphView (see gateway/graph_views.py); ``label`` names it for screen readers
  function render(box, graph, label) {
    while (box.firstChild) box.removeChild(box.firstChild);
    const at = {};
    for (const n of graph.nodes) at[n.id] = { x: cx(n.x), y: cy(n.rank) };
    const width = PAD * 2 + (graph.width - 1) * COL + NW + BACK + 8;
    const height = PAD * 2 + Math.max(0, graph.ranks - 1) * ROW + NH;
    const process = graph.process;
    const root = svg("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
      "aria-label": label, "data-case": graph.case, "data-current": process ? process.current : null }, markers());
    const plain = svg("g", { class: "edges" }), lit = svg("g", { class: "edges taken" }), labels = svg("g", { class: "labels" });
    for (const e of graph.edges) {
      const { d, label: [lx, ly] } = edgePath(e, at);
      const taken = process && e.taken > 0;
      const path = svg("path", { d, class: `gedge e-${e.kind}${taken ? " taken" : ""}`, "data-from": e.source,
        "data-to": e.target, "data-kind": e.kind, "data-taken": e.taken,
        "marker-end": `url(#gm-${taken ? "taken" : e.kind})` },
        title(`${e.source} → ${e.target}: ${e.kind}${e.label ? ` (${e.label})` : ""}${taken ? `, taken ${e.taken}×` : ""}`));
      (taken ? lit : plain).append(path);
      if (e.label && e.kind !== "next") {
        const left = at[e.target].x < at[e.source].x;  // an edge going left is labelled on its left
        labels.append(text({ class: `elabel e-${e.kind}`, x: left ? lx - 4 : lx + 4, y: ly,
          "text-anchor": left ? "end" : "start" }, clip(e.label, 24)));
      }
    }
    const nodes = svg("g", { class: "nodes" });
    for (const n of graph.nodes) nodes.append(drawNode(n, at, process));
    root.append(plain, lit, labels, nodes);
    const scroller = html("div", "graph-scroll");
    scroller.append(root);
    box.append(scroller, legend(graph));
    // CSS lets the SVG shrink to the box (max-width: 100%); this keeps its text readable (CSSOM, allowed by the CSP)
    root.style.minWidth = `${Math.round(width * MIN_SCALE)}px`;
  }

  window.StageflowGraph = { render };
})();
