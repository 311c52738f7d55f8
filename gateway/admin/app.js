// Stageflow admin page: plain JS, no build step. Every piece of data reaches the DOM through textContent
// (or an attribute set with setAttribute), never through innerHTML, so no process data can become markup.
"use strict";

(function () {
  const KEY = "stageflow.apiKey";
  const POLL_MS = 2000;
  const STATUSES = ["running", "waiting", "completed", "failed", "cancelled"];
  const $ = (id) => document.getElementById(id);

  const state = {
    cases: {},        // name -> stages (latest version)
    items: [],        // the list as shown
    cursor: null,     // next_cursor of the last page shown
    selected: null,   // open process id
    view: null,       // its last view
    jobs: [],         // the newest background jobs (bulk reprocess)
    graphOf: null,    // "<process id>@<version>" of the process graph drawn (redrawn when the version moves)
    caseGraph: null,  // the case whose graph is open above the list
    busy: false,
  };

  // ---------------------------------------------------------------- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(epoch) {
    if (epoch === null || epoch === undefined) return "";
    const d = new Date(epoch * 1000);
    const now = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "";
    const s = Math.abs(seconds);
    if (s < 0.01) return `${(s * 1000).toFixed(1)} ms`;
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
  }

  function relative(epoch) {
    if (!epoch) return "";
    const delta = epoch - Date.now() / 1000;
    return delta >= 0 ? `in ${fmtDuration(delta)}` : `${fmtDuration(delta)} ago`;
  }

  const json = (value) => JSON.stringify(value, null, 2);

  // "retrying" is a waiting process whose wait is a retry backoff (or a re-send): shown apart, filtered apart.
  function shownStatus(status, waiting) {
    return status === "waiting" && waiting && (waiting.reason === "retry" || waiting.kind === "resend") ? "retrying" : status;
  }

  function badge(status) { return el("span", { class: `badge s-${status}`, text: status }); }

  function progressOf(item) {
    const stages = state.cases[item.case] || [];
    const total = stages.length;
    let done = 0;
    if (item.status === "completed") done = total;
    else if (item.stage) done = Math.max(0, stages.indexOf(item.stage));
    return { done, total };
  }

  function progressBar(item) {
    const { done, total } = progressOf(item);
    const bar = el("span", { class: `bar s-${item.status}` });
    const fill = el("span", { class: "fill" });
    fill.style.width = total ? `${Math.round((100 * done) / total)}%` : "0%";  // CSSOM: allowed by the CSP
    bar.append(fill);
    return el("span", { class: "progress", title: `${done} of ${total} stages done` }, bar,
      el("span", { class: "small muted", text: `${done}/${total}` }));
  }

  function showBanner(message, kind) {
    const banner = $("banner");
    banner.textContent = message;
    banner.className = `banner ${kind || "error"}`;
    banner.hidden = !message;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "", Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit" });
    } catch (exc) {
      throw new ApiError(0, "the gateway does not answer");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (exc) { data = null; }
    if (!response.ok) {
      let detail = (data && (data.detail || data.title)) || `HTTP ${response.status}`;
      if (data && data.hint) detail += ` (${data.hint})`;
      if (response.status === 401) logout(detail);
      throw new ApiError(response.status, detail);
    }
    return data;
  }

  // ---------------------------------------------------------------- login

  function logout(message) {
    sessionStorage.removeItem(KEY);
    $("main").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-error").hidden = !message;
    $("key").focus();
  }

  async function login(event) {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    try {
      await start();
      onHash();
    } catch (exc) {
      if (exc.status !== 401) logout(exc.message);
    }
  }

  async function start() {
    const cases = await api("GET", "/cases");
    state.cases = {};
    const select = $("f-case");
    const chosen = select.value;
    clear(select).append(el("option", { value: "", text: "all" }));
    for (const c of cases) {
      state.cases[c.name] = c.stages;
      select.append(el("option", { value: c.name, text: c.name }));
    }
    select.value = chosen;
    $("f-graph").disabled = !select.value;
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget").hidden = false;
    await refresh(true);
  }

  // ---------------------------------------------------------------- counts and list

  function renderCounts(stats) {
    const box = clear($("counts"));
    const by = stats.by_status || {};
    box.append(el("span", { class: "count total" }, el("b", { text: stats.total }), " processes"));
    for (const status of STATUSES) {
      const chip = el("button", { type: "button", class: `count chip s-${status}`, "data-status": status,
        title: `show ${status} processes` }, el("b", { text: by[status] || 0 }), ` ${status}`);
      chip.addEventListener("click", () => { $("f-status").value = status; refresh(true); });
      box.append(chip);
    }
    if (stats.success_rate !== null && stats.success_rate !== undefined) {
      box.append(el("span", { class: "count rate", title: "completed / finished" },
        el("b", { text: `${(stats.success_rate * 100).toFixed(1)}%` }), " success"));
    }
  }

  function filterParams() {
    const params = new URLSearchParams();
    if ($("f-case").value) params.set("case", $("f-case").value);
    if ($("f-status").value) params.set("status", $("f-status").value);
    if ($("f-stage").value.trim()) params.set("failed_stage", $("f-stage").value.trim());
    if ($("f-search").value.trim() && $("f-case").value) params.set("search", $("f-search").value.trim());
    return params;
  }

  function waitingText(w) {
    if (!w) return "";
    const what = w.kind === "service" ? `reply from ${w.api || "a service"}`
      : w.kind === "event" ? (isApproval(w) ? `approval of ${w.name.slice(APPROVAL.length)}` : `event ${w.name}`)
      : w.kind === "fan_out" ? `${w.total} fan-out items → ${w.resume}`
      : w.kind === "resend" ? `re-send to ${w.api || "a service"} (attempt ${w.attempt})`
      : w.reason === "retry" ? `retry of ${w.stage}${w.attempt ? ` (attempt ${w.attempt})` : ""}`
      : w.reason === "start" ? `start at ${w.stage}` : `timer → ${w.stage || "?"}`;
    const until = w.until || w.deadline;
    return until ? `${what}, ${relative(until)}` : what;
  }

  // Counts of the fan-out a process waits on; the items themselves: GET /processes/{id}/items.
  function fanOutText(f) {
    return `${f.succeeded} of ${f.total} items succeeded, ${f.failed} failed, ${f.in_flight} running, ` +
      `${f.pending} not started${f.decided ? ` (decided: ${f.decided})` : ""}`;
  }

  function renderRows() {
    const body = clear($("rows"));
    for (const item of state.items) {
      const note = item.error ? `${item.error.stage ? item.error.stage + ": " : ""}${item.error.reason || ""}`
        : waitingText(item.waiting);
      const row = el("tr", { "data-id": item.process_id, "data-status": item.status,
        class: item.process_id === state.selected ? "selected" : "" },
        el("td", { class: "mono id", title: item.process_id, text: item.process_id }),
        el("td", { text: item.case + (item.case_version > 1 ? ` v${item.case_version}` : "") }),
        el("td", { class: "status" }, badge(shownStatus(item.status, item.waiting))),
        el("td", { class: "mono", text: item.stage || "—" }),
        el("td", {}, progressBar(item)),
        el("td", { class: "nowrap", title: relative(item.created_at), text: fmtTime(item.created_at) }),
        el("td", { class: item.error ? "note err" : "note", title: note, text: note }));
      row.addEventListener("click", () => { location.hash = `p=${encodeURIComponent(item.process_id)}`; });
      body.append(row);
    }
    if (!state.items.length) {
      body.append(el("tr", {}, el("td", { colspan: 7, class: "empty muted", text: "no process matches" })));
    }
    $("more").hidden = !state.cursor;
    $("shown").textContent = `${state.items.length} shown${state.cursor ? ", more below" : ""}`;
  }

  async function loadList() {
    const params = filterParams();
    params.set("limit", String(Math.min(500, Math.max(50, state.items.length))));
    const page = await api("GET", `/processes?${params}`);
    state.items = page.items;
    state.cursor = page.next_cursor;
    renderRows();
  }

  async function loadMore() {
    if (!state.cursor) return;
    const params = filterParams();
    params.set("limit", "50");
    params.set("cursor", state.cursor);
    const page = await api("GET", `/processes?${params}`);
    const seen = new Set(state.items.map((i) => i.process_id));
    state.items.push(...page.items.filter((i) => !seen.has(i.process_id)));
    state.cursor = page.next_cursor;
    renderRows();
  }

  // ---------------------------------------------------------------- pending approvals
  // Processes waiting in a blueprint approval step (the event "approval:<step>"), from the newest 500 waiting.
  // Rows are kept while their process still waits, so a comment being typed survives the refresh.

  const APPROVAL = "approval:";
  function isApproval(w) { return !!w && w.kind === "event" && typeof w.name === "string" && w.name.startsWith(APPROVAL); }

  async function loadApprovals() {
    const page = await api("GET", "/processes?status=waiting&limit=500");
    renderApprovals(page.items.filter((i) => isApproval(i.waiting)));
  }

  function renderApprovals(pending) {
    const box = $("approvals");
    const wanted = new Set(pending.map((i) => i.process_id));
    for (const row of Array.from(box.querySelectorAll("[data-approval]"))) {
      if (!wanted.has(row.getAttribute("data-approval"))) row.remove();
    }
    if (pending.length && !box.querySelector("h3")) box.prepend(el("h3", { text: "Pending approvals" }));
    for (const item of pending) {
      if (box.querySelector(`[data-approval="${CSS.escape(item.process_id)}"]`)) continue;
      const comment = el("input", { type: "text", placeholder: "comment", class: "comment", size: "24" });
      const decide = (approved) => async () => {
        try {
          await api("POST", `/processes/${encodeURIComponent(item.process_id)}/approval`,
            { approved, comment: comment.value.trim() || null });
          showBanner(`${approved ? "Approved" : "Rejected"}: ${item.process_id}`, "ok");
          refresh(false);
        } catch (exc) { showBanner(exc.message); }
      };
      const approve = el("button", { type: "button", class: "primary", text: "Approve" });
      const reject = el("button", { type: "button", class: "warn", text: "Reject" });
      approve.addEventListener("click", decide(true));
      reject.addEventListener("click", decide(false));
      const step = item.waiting.name.slice(APPROVAL.length);
      const due = item.waiting.deadline ? `, ${relative(item.waiting.deadline)}` : "";
      box.append(el("div", { class: "job", "data-approval": item.process_id },
        el("span", { class: "mono", title: item.process_id, text: item.process_id.slice(0, 8) }),
        el("span", { text: ` ${item.case}: ${step}${due} ` }), comment, approve, reject));
    }
    if (!pending.length) clear(box);
    box.hidden = !pending.length;
  }

  // ---------------------------------------------------------------- one process

  function timeline(view) {
    const history = view.history || [];
    const stages = state.cases[view.case] || [...new Set(history.map((e) => e.stage).filter(Boolean))];
    const current = view.stage;
    const currentIndex = stages.indexOf(current);
    return stages.map((name, index) => {
      const runs = history.filter((e) => e.stage === name && e.duration_ms !== undefined);
      const errors = runs.filter((e) => e.error);
      const okRun = runs.some((e) => !e.error && e.event !== "failed");
      let stateName;
      if (view.status === "completed") stateName = okRun ? "done" : "skipped";
      else if (name === current) {
        if (view.status === "waiting") stateName = view.waiting && view.waiting.reason === "retry" ? "retrying" : "waiting";
        else stateName = view.status;  // running, failed, cancelled
      } else if (okRun) stateName = "done";
      else if (currentIndex >= 0 && index < currentIndex) stateName = "skipped";
      else stateName = "pending";
      const ms = runs.reduce((sum, e) => sum + (e.duration_ms || 0), 0);
      return { name, state: stateName, runs: runs.length, ms, errors };
    });
  }

  function renderTimeline(view) {
    const list = clear($("d-timeline"));
    for (const step of timeline(view)) {
      const meta = [];
      if (step.runs) meta.push(fmtDuration(step.ms / 1000));
      if (step.runs > 1) meta.push(`${step.runs} runs`);
      if (step.state === "waiting" || step.state === "retrying") meta.push(waitingText(view.waiting));
      const item = el("li", { class: `step t-${step.state}`, "data-stage": step.name },
        el("span", { class: "dot" }),
        el("span", { class: "mono name", text: step.name }),
        el("span", { class: `tag t-${step.state}`, text: step.state }),
        el("span", { class: "small muted meta", text: meta.join(" · ") }));
      const lastError = step.errors[step.errors.length - 1];
      if (lastError && step.state !== "done") {
        item.append(el("div", { class: "step-error", text: `attempt ${lastError.attempt || step.errors.length}: ${lastError.error}` }));
      } else if (view.error && view.error.stage === step.name && step.state !== "done") {
        item.append(el("div", { class: "step-error", text: view.error.reason || "" }));
      }
      list.append(item);
    }
  }

  function kv(pairs) {
    const box = clear($("d-summary"));
    for (const [key, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      box.append(el("div", { class: "k", text: key }), el("div", { class: "v" }, value));
    }
  }

  function renderDetail(view, fresh) {
    state.view = view;
    $("detail").hidden = false;
    $("d-title").textContent = view.process_id;
    clear($("d-sub")).append(badge(shownStatus(view.status, view.waiting)), ` ${view.case} v${view.case_version}`,
      view.client_key ? ` · key ${view.client_key}` : "");
    $("d-sub").setAttribute("data-status", view.status);
    const t = view.timings || {};
    const p = view.progress || { stages_done: 0, stages_total: 0 };
    kv([
      ["stage", view.stage],
      ["progress", `${p.stages_done} of ${p.stages_total} stages`],
      ["created", `${fmtTime(t.created_at)} (${relative(t.created_at)})`],
      ["updated", `${fmtTime(t.updated_at)} (${relative(t.updated_at)})`],
      ["ended", t.ended_at ? fmtTime(t.ended_at) : null],
      ["duration", fmtDuration(t.duration_s) + (t.ended_at ? "" : " so far")],
      ["attempts", view.attempts ? String(view.attempts) : null],
      ["version", String(view.version)],
    ]);

    const waiting = $("d-waiting");
    waiting.hidden = !view.waiting;
    if (view.waiting) {
      const w = view.waiting;
      const until = w.until || w.deadline;
      clear(waiting).append(el("b", { text: "Waiting for " }), waitingText(w),
        until ? el("div", { class: "small muted", text: `until ${new Date(until * 1000).toLocaleString()}` }) : null,
        w.error ? el("div", { class: "small err", text: `last error: ${w.error}` }) : null,
        view.fan_out ? el("div", { class: "small", text: fanOutText(view.fan_out) }) : null);
    }
    const errorBox = $("d-error");
    const failures = view.failures || [];
    errorBox.hidden = !view.error && !failures.length;
    clear(errorBox);
    if (view.error) {
      errorBox.append(el("b", { text: view.status === "cancelled" ? "Cancelled" : "Failed" }),
        view.error.stage ? el("span", { class: "mono", text: ` at ${view.error.stage}` }) : null,
        el("div", { class: "reason", text: view.error.reason || json(view.error) }));
    }
    for (const f of failures) {
      errorBox.append(el("div", { class: "small", text: `went on after ${f.stage || "?"} failed: ${f.reason || ""}` }));
    }

    renderTimeline(view);
    loadProcessGraph(view);
    $("d-store").textContent = json(view.store || {});
    $("d-input").textContent = json(view.input || {});
    $("d-result-wrap").hidden = view.result === null || view.result === undefined;
    $("d-result").textContent = json(view.result);

    const hist = clear($("d-history"));
    for (const e of (view.history || []).slice().reverse()) {
      const extra = [];
      if (e.error) extra.push(e.error);
      if (e.reason) extra.push(e.reason);
      if (e.api) extra.push(`api ${e.api}`);
      if (e.until) extra.push(`until ${fmtTime(e.until)}`);
      if (e.input_changed) extra.push("input changed");
      hist.append(el("tr", { class: `ev-${e.event}` },
        el("td", { text: e.version }), el("td", { class: "nowrap", text: fmtTime(e.at) }),
        el("td", { class: "event", text: e.event || "" }), el("td", { class: "mono", text: e.stage || "" }),
        el("td", { class: "mono", text: e.to || "" }),
        el("td", { class: "num", text: e.duration_ms !== undefined ? e.duration_ms.toFixed(1) : "" }),
        el("td", { class: "note", title: extra.join("; "), text: extra.join("; ") })));
    }

    const finished = ["completed", "failed", "cancelled"].includes(view.status);
    const canRetry = view.status === "failed" || view.status === "cancelled";
    $("r-go").disabled = !canRetry;
    $("c-go").disabled = finished;
    $("retry-form").setAttribute("data-can-retry", String(canRetry));
    if (fresh) {
      const select = clear($("r-stage"));
      select.append(el("option", { value: "", text: "the failed stage" }));
      for (const name of state.cases[view.case] || []) select.append(el("option", { value: name, text: name }));
      $("r-edit").checked = false;
      $("r-input").hidden = true;
      $("r-input").value = json(view.input || {});
      setMessage("");
      resetConfirm($("c-go"));
    }
    for (const row of $("rows").children) row.classList.toggle("selected", row.getAttribute("data-id") === view.process_id);
  }

  async function loadDetail(fresh) {
    if (!state.selected) return;
    const id = state.selected;
    try {
      const view = await api("GET", `/processes/${encodeURIComponent(id)}`);
      if (id === state.selected) renderDetail(view, fresh);
    } catch (exc) {
      if (exc.status === 404) { showBanner(`no process ${id}`); closeDetail(); } else throw exc;
    }
  }

  // ---------------------------------------------------------------- execution graphs (graph.js draws them)

  async function loadProcessGraph(view) {
    const key = `${view.process_id}@${view.version}`;
    if (state.graphOf === key) return;
    state.graphOf = key;
    const box = $("d-graph");
    try {
      const graph = await api("GET", `/processes/${encodeURIComponent(view.process_id)}/graph`);
      if (state.graphOf !== key) return;  // another process or version was opened meanwhile
      window.StageflowGraph.render(box, graph, `execution graph of process ${view.process_id} (${view.case})`);
    } catch (exc) {
      if (state.graphOf === key) state.graphOf = null;  // try again at the next refresh
      clear(box).append(el("p", { class: "small err", text: `no graph: ${exc.message}` }));
    }
  }

  async function openCaseGraph(name) {
    state.caseGraph = name || null;
    $("case-graph").hidden = !name;
    if (!name) return;
    try {
      const graph = await api("GET", `/cases/${encodeURIComponent(name)}/graph`);
      if (state.caseGraph !== name) return;
      $("cg-title").textContent = `${name} v${graph.version}: ${graph.source === "blueprint" ? "blueprint steps" : "stages"}`;
      window.StageflowGraph.render($("cg-graph"), graph, `execution graph of case ${name}`);
    } catch (exc) {
      clear($("cg-graph")).append(el("p", { class: "small err", text: `no graph: ${exc.message}` }));
    }
  }

  function closeDetail() {
    state.selected = null;
    state.view = null;
    state.graphOf = null;
    $("detail").hidden = true;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    for (const row of $("rows").children) row.classList.remove("selected");
  }

  function onHash() {
    const match = /^#p=(.+)$/.exec(location.hash);
    const id = match ? decodeURIComponent(match[1]) : null;
    if (!id) { closeDetail(); return; }
    if (id !== state.selected) {
      state.selected = id;
      loadDetail(true).catch((exc) => showBanner(exc.message));
    }
  }

  // ---------------------------------------------------------------- actions

  function setMessage(text, kind) {
    const msg = $("a-msg");
    msg.textContent = text;
    msg.className = `small ${kind || ""}`;
    msg.hidden = !text;
  }

  // A destructive button asks for a second click instead of a modal dialog.
  function armed(button, label) {
    if (button.dataset.armed === "1") { resetConfirm(button); return true; }
    button.dataset.label = button.textContent;
    button.dataset.armed = "1";
    button.textContent = label;
    button.classList.add("armed");
    button._timer = setTimeout(() => resetConfirm(button), 4000);
    return false;
  }

  function resetConfirm(button) {
    if (button.dataset.armed === "1") {
      button.textContent = button.dataset.label;
      button.dataset.armed = "0";
      button.classList.remove("armed");
      clearTimeout(button._timer);
    }
  }

  async function doRetry(event) {
    event.preventDefault();
    if (!state.view) return;
    const body = {};
    if ($("r-stage").value) body.from_stage = $("r-stage").value;
    if ($("r-edit").checked) {
      try {
        body.input = JSON.parse($("r-input").value);
      } catch (exc) {
        setMessage(`the input is not valid JSON: ${exc.message}`, "err");
        return;
      }
      if (body.input === null || typeof body.input !== "object" || Array.isArray(body.input)) {
        setMessage("the input must be a JSON object", "err");
        return;
      }
    }
    try {
      const result = await api("POST", `/processes/${encodeURIComponent(state.view.process_id)}/retry`, body);
      setMessage(`retried: ${result.status} at ${result.stage}`, "ok");
      await refresh(false);
    } catch (exc) {
      setMessage(exc.status === 403 ? "this API key may only read" : exc.message, "err");
    }
  }

  async function doCancel() {
    if (!state.view || !armed($("c-go"), "Click again to cancel")) return;
    try {
      const result = await api("POST", `/processes/${encodeURIComponent(state.view.process_id)}/cancel`,
        { reason: "cancelled from the admin page" });
      setMessage(`${result.status}`, "ok");
      await refresh(false);
    } catch (exc) {
      setMessage(exc.status === 403 ? "this API key may only read" : exc.message, "err");
    }
  }

  async function doReprocess() {
    const button = $("reprocess");
    const what = [$("f-case").value && `case ${$("f-case").value}`, $("f-stage").value.trim() && `stage ${$("f-stage").value.trim()}`]
      .filter(Boolean).join(", ");
    if (!armed(button, `Retry all failed${what ? ` (${what})` : ""}? Click again`)) return;
    const body = {};
    if ($("f-case").value) body.case = $("f-case").value;
    if ($("f-stage").value.trim()) body.failed_stage = $("f-stage").value.trim();
    try {
      const job = await api("POST", "/processes/reprocess", body);  // 202: the job runs in the gateway
      state.jobs = [job, ...state.jobs.filter((j) => j.job_id !== job.job_id)];
      renderJobs();
    } catch (exc) {
      showBanner(exc.status === 403 ? "this API key may only read" : exc.message);
    }
  }

  async function doResume(jobId) {
    try {
      await api("POST", `/jobs/${encodeURIComponent(jobId)}/resume`);
      await refresh(false);
    } catch (exc) {
      showBanner(exc.status === 403 ? "this API key may only read" : exc.message);
    }
  }

  // ---------------------------------------------------------------- jobs

  function jobFilter(job) {
    const f = (job.params && job.params.filter) || {};
    const parts = [f.case && `case ${f.case}`, f.status && f.status !== "failed" && f.status,
      f.failed_stage && `stage ${f.failed_stage}`, job.params && job.params.from_stage && `from ${job.params.from_stage}`];
    return parts.filter(Boolean).join(", ") || "all failed";
  }

  function renderJobs() {
    const box = clear($("jobs"));
    const since = Date.now() / 1000 - 3600;  // the running ones, and what ended in the last hour
    const shown = state.jobs.filter((j) => j.status === "running" || (j.ended_at || j.updated_at) > since).slice(0, 3);
    box.hidden = !shown.length;
    for (const job of shown) {
      const handled = job.done + job.failed;
      const pct = job.progress === null || job.progress === undefined ? null : Math.round(job.progress * 100);
      const bar = el("span", { class: `bar job-bar j-${job.status}` });
      const fill = el("span", { class: "fill" });
      fill.style.width = pct === null ? "100%" : `${pct}%`;
      if (pct === null) fill.classList.add("unknown");
      bar.append(fill);
      const counts = `${handled}${job.total === null ? "" : `/${job.total}`} · retried ${job.done}` +
        (job.failed ? ` · not retried ${job.failed}` : "");
      const row = el("div", { class: "job", "data-id": job.job_id, "data-status": job.status },
        el("span", { class: "strong", text: `Reprocess ${jobFilter(job)}` }),
        bar,
        el("span", { class: "small counts-text", text: counts }),
        el("span", { class: `tag j-${job.status}`, text: job.status }),
        el("span", { class: "small muted", text: fmtTime(job.created_at) }));
      if (job.error) row.append(el("span", { class: "small err", title: job.error, text: job.error }));
      if (job.errors && job.errors.length) {
        const last = job.errors[job.errors.length - 1];
        row.append(el("span", { class: "small err", title: job.errors.map((e) => `${e.process_id}: ${e.reason}`).join("\n"),
          text: `${last.process_id.slice(0, 8)}…: ${last.reason}` }));
      }
      if (job.status === "interrupted" || job.status === "failed") {
        const resume = el("button", { type: "button", class: "ghost resume", text: "Resume" });
        resume.addEventListener("click", () => doResume(job.job_id));
        row.append(resume);
      }
      box.append(row);
    }
  }

  // ---------------------------------------------------------------- refresh loop

  async function refresh(fromFilter) {
    if (!sessionStorage.getItem(KEY) || $("main").hidden) return;
    if (state.busy && !fromFilter) return;
    state.busy = true;
    if (fromFilter) state.items = [];
    try {
      const [stats, jobs] = await Promise.all([api("GET", "/stats"), api("GET", "/jobs?limit=5"), loadList(),
        loadDetail(false), loadApprovals()]);
      renderCounts(stats);
      window.StageflowCharts.render($("charts"), stats.last_hour);
      state.jobs = jobs.items;
      renderJobs();
      $("refreshed").textContent = `updated ${fmtTime(Date.now() / 1000)}`;
      $("live").className = "live ok";
      if ($("banner").classList.contains("error")) showBanner("");
    } catch (exc) {
      $("live").className = "live down";
      if (exc.status !== 401) showBanner(exc.message);
    } finally {
      state.busy = false;
    }
  }

  function init() {
    $("login-form").addEventListener("submit", login);
    $("forget").addEventListener("click", () => logout(""));
    $("filters").addEventListener("submit", (e) => { e.preventDefault(); refresh(true); });
    $("f-case").addEventListener("change", () => {
      $("f-graph").disabled = !$("f-case").value;
      if (state.caseGraph) openCaseGraph($("f-case").value);
      refresh(true);
    });
    $("f-graph").addEventListener("click", () => openCaseGraph($("f-case").value));
    $("cg-close").addEventListener("click", () => openCaseGraph(null));
    $("f-status").addEventListener("change", () => refresh(true));
    $("f-stage").addEventListener("change", () => refresh(true));
    $("f-search").addEventListener("change", () => refresh(true));
    $("more").addEventListener("click", () => loadMore().catch((exc) => showBanner(exc.message)));
    $("reprocess").addEventListener("click", doReprocess);
    $("d-close").addEventListener("click", closeDetail);
    $("retry-form").addEventListener("submit", doRetry);
    $("c-go").addEventListener("click", doCancel);
    $("r-edit").addEventListener("change", () => { $("r-input").hidden = !$("r-edit").checked; });
    window.addEventListener("hashchange", onHash);
    setInterval(() => refresh(false), POLL_MS);
    if (sessionStorage.getItem(KEY)) {
      start().then(onHash).catch((exc) => { if (exc.status !== 401) logout(exc.message); });
    } else {
      logout("");
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
