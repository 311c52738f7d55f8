// Stageflow admin page: the last hour per case as small inline SVG charts (no library, no build step).
// Like app.js, every value reaches the DOM through textContent or setAttribute, never as markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  function html(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function tip(text) { const t = svg("title"); t.textContent = text; return t; }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 120) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  }

  // processes finished per minute, oldest first: one bar per minute
  function throughput(perMinute) {
    const w = 240, h = 44, n = perMinute.length, bw = w / n, max = Math.max(1, ...perMinute);
    const total = perMinute.reduce((a, b) => a + b, 0);
    const chart = svg("svg", { class: "chart throughput", viewBox: `0 0 ${w} ${h}`, width: w, height: h,
      role: "img", "aria-label": `${total} finished in the last hour`, "data-total": total });
    perMinute.forEach((count, i) => {
      const bh = count ? Math.max(2, (count / max) * (h - 2)) : 0;
      chart.append(svg("rect", { x: (i * bw).toFixed(2), y: (h - bh).toFixed(2), width: Math.max(1, bw - 1).toFixed(2),
        height: bh.toFixed(2), "data-count": count }, tip(`${n - i} min ago: ${count} finished`)));
    });
    chart.append(svg("line", { x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5, class: "axis" }));
    return chart;
  }

  // end-to-end duration: p50, p95, p99 as bars on one scale (the p99's)
  function durations(d) {
    const w = 240, row = 14, h = row * 3;
    const chart = svg("svg", { class: "chart durations", viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img",
      "aria-label": "end-to-end duration percentiles" });
    if (!d) { chart.append(svg("text", { x: 0, y: 12, class: "none" })); chart.lastChild.textContent = "no completion"; return chart; }
    const max = Math.max(d.p99, 1e-6);
    ["p50", "p95", "p99"].forEach((p, i) => {
      const bw = Math.max(1, (d[p] / max) * (w - 110));
      const label = svg("text", { x: 0, y: i * row + 11 }); label.textContent = p;
      const value = svg("text", { x: 34 + bw + 4, y: i * row + 11 }); value.textContent = seconds(d[p]);
      chart.append(label, svg("rect", { x: 34, y: i * row + 2, width: bw.toFixed(2), height: row - 4, class: p,
        "data-p": p, "data-s": d[p] }, tip(`${p}: ${seconds(d[p])} (of ${d.sample} completions)`)), value);
    });
    return chart;
  }

  // failed processes by the stage that failed
  function failures(byStage) {
    const entries = Object.entries(byStage).sort((a, b) => b[1] - a[1]).slice(0, 5);
    const w = 240, row = 14, h = Math.max(row, row * entries.length);
    const chart = svg("svg", { class: "chart failures", viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img",
      "aria-label": "failures by stage" });
    if (!entries.length) { const t = svg("text", { x: 0, y: 11, class: "none" }); t.textContent = "no failure"; chart.append(t); return chart; }
    const max = Math.max(...entries.map((e) => e[1]));
    entries.forEach(([stage, count], i) => {
      const bw = Math.max(2, (count / max) * (w - 140));
      const label = svg("text", { x: 0, y: i * row + 11 }); label.textContent = stage.length > 16 ? `${stage.slice(0, 15)}…` : stage;
      const value = svg("text", { x: 104 + bw + 4, y: i * row + 11 }); value.textContent = String(count);
      chart.append(label, svg("rect", { x: 104, y: i * row + 2, width: bw.toFixed(2), height: row - 4,
        "data-stage": stage, "data-count": count }, tip(`${stage}: ${count} failed`)), value);
    });
    return chart;
  }

  function card(name, s) {
    const box = html("div", "case-card");
    box.setAttribute("data-case", name);
    for (const key of ["completed", "failed", "cancelled", "stuck"]) box.setAttribute(`data-${key}`, s[key]);
    const head = html("div", "case-head");
    head.append(html("b", "", name), html("span", "muted small",
      `${s.completed} done · ${s.failed} failed · ${s.cancelled} cancelled`));
    if (s.stuck) head.append(html("span", "stuck", `${s.stuck} stuck`));
    box.append(head,
      html("div", "chart-label", "finished per minute, last hour"), throughput(s.throughput_per_minute),
      html("div", "chart-label", "end to end"), durations(s.duration_s),
      html("div", "chart-label", "failures by stage"), failures(s.failures_by_stage));
    return box;
  }

  // ``lastHour`` is /stats' ``last_hour``: {window_s, stuck_after_s, cases: {name: {...}}}
  function render(box, lastHour) {
    while (box.firstChild) box.removeChild(box.firstChild);
    const cases = Object.entries((lastHour && lastHour.cases) || {});
    box.hidden = cases.length === 0;
    for (const [name, s] of cases) box.append(card(name, s));
  }

  window.StageflowCharts = { render };
})();
