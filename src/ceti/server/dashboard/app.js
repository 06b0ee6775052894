// The ceτi dashboard: one page, hash routes, short polling of /v1/dashboard/* with the token in sessionStorage.
// Every value from the server is put into the page as text (never as HTML).
"use strict";

const TOKEN_KEY = "ceti-token";
const REFRESH_MS = 2000;
const LOG_REFRESH_MS = 1000;
const COLORS = { developer: "#4aa3ff", idle: "#3d4753", bittensor: "#bc8cff", akash: "#f778ba", render: "#ffa657",
                 "other-network": "#7ee787", lost: "#f85149" };
const PLOT_LAYOUT = { paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: "#e6edf3", size: 12 },
                      margin: { l: 50, r: 20, t: 10, b: 40 }, legend: { orientation: "h", y: -0.2 } };
const PLOT_CONFIG = { displayModeBar: false, responsive: true };

let timer = null;       // the current view's refresh timer
let generation = 0;     // bumps on every navigation; a stale refresh sees a newer generation and stops

// -- small helpers ---------------------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const short = (id) => (id ? id.slice(0, 8) : "-");
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "-");
const fmtDate = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
function fmtDuration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}
const fmtMs = (s) => (s === null || s === undefined ? "-" : `${(s * 1000).toFixed(1)} ms`);
const fmtMoney = (x) => (x ? `$${x.toFixed(x < 0.01 ? 4 : 2)}` : "$0");
const fmtMiB = (x) => (x ? `${(x / 1024).toFixed(1)} GiB` : "-");
const stateBadge = (s) => el("span", { class: `state ${s}`, text: s });
const useClass = (u) => (u === "developer" || u === "idle" ? u : "network");
const useLabel = (u) => (u === "developer" ? "developer work" : u === "idle" ? "idle" : `${u} network`);

function table(headers, rows, emptyText) {
  if (!rows.length) return el("div", { class: "empty", text: emptyText });
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))));
}

function emptyState(title, ...parts) {
  return el("div", { class: "empty", "data-testid": "empty-state" }, el("p", {}, el("b", { text: title })),
    parts.length ? el("p", {}, parts) : null);
}

function cmd(text) { return el("code", { text }); }

function noChart(container, text) {
  if (typeof Plotly !== "undefined") Plotly.purge(container);
  container.replaceChildren(el("div", { class: "empty", text }));
}

function plot(container, data, layout) {
  if (typeof Plotly === "undefined") {
    container.textContent = "Charts need plotly.js, which the server serves from the installed plotly package.";
    return;
  }
  if (!container.classList.contains("js-plotly-plot")) container.replaceChildren();  // drop an empty-state note
  Plotly.react(container, data, { ...PLOT_LAYOUT, ...layout }, PLOT_CONFIG);
}

// -- the server --------------------------------------------------------------------------------------------------

class AuthError extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const res = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (res.status === 401) throw new AuthError("the token was refused (missing, invalid or revoked)");
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body.detail || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// -- sign-in -------------------------------------------------------------------------------------------------------

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopRefresh();
  document.getElementById("view").replaceChildren();
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("live").textContent = "";
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  try {
    await whoami();
    input.value = "";
    route();
  } catch (e) {
    showLogin(e.message);
  }
}

async function whoami() {
  const me = await api("/v1/whoami");
  const scope = me.kind === "project" ? `project ${short(me.project_id)}`
    : me.kind === "provider" ? `provider ${short(me.provider_id)}` : "admin";
  document.getElementById("who").textContent = `signed in: ${scope}`;
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  return me;
}

// -- routing and refresh -------------------------------------------------------------------------------------------

function stopRefresh() {
  generation += 1;
  if (timer) clearTimeout(timer);
  timer = null;
}

function startView(render, interval) {
  stopRefresh();
  const mine = generation;
  const live = document.getElementById("live");
  const tick = async () => {
    if (mine !== generation) return;
    try {
      await render(mine);
      live.textContent = `updated ${new Date().toLocaleTimeString()}`;
      live.classList.remove("stale");
    } catch (e) {
      if (e instanceof AuthError) { showLogin(e.message); return; }
      live.textContent = `update failed: ${e.message}`;
      live.classList.add("stale");
      if (e.status === 403 || e.status === 404) { showProblem(e.message); return; }
    }
    if (mine === generation) timer = setTimeout(tick, interval || REFRESH_MS);
  };
  tick();
}

function showProblem(message) {
  document.getElementById("view").replaceChildren(el("div", { class: "panel" },
    el("p", { class: "error", "data-testid": "problem", text: message }),
    el("p", {}, el("a", { href: "#/overview", text: "Back to the network overview" }))));
}

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { showLogin(); return; }
  const parts = (location.hash || "#/overview").slice(2).split("/");
  const [page, id] = [parts[0] || "overview", parts[1] ? decodeURIComponent(parts[1]) : null];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.route === page);
  const view = document.getElementById("view");
  view.replaceChildren();
  const pages = { overview: overviewView, jobs: id ? jobView : jobsView, nodes: id ? nodeView : nodesView,
                  scheduler: schedulerView };
  (pages[page] || overviewView)(view, id);
}

// -- network overview ------------------------------------------------------------------------------------------------

// Rough outlines of the continents (longitude, latitude), our own, so the world view needs no map tiles.
const LAND = [
  [[-168, 66], [-160, 71], [-140, 70], [-120, 72], [-95, 72], [-80, 73], [-62, 60], [-55, 52], [-66, 45], [-70, 42],
   [-76, 35], [-81, 31], [-80, 25], [-82, 28], [-90, 30], [-97, 27], [-97, 22], [-92, 18], [-87, 21], [-83, 10],
   [-78, 8], [-85, 12], [-95, 16], [-105, 20], [-110, 24], [-117, 32], [-124, 40], [-124, 48], [-135, 58],
   [-152, 58], [-165, 60], [-168, 66]],
  [[-45, 60], [-20, 70], [-20, 80], [-60, 82], [-72, 78], [-55, 68], [-45, 60]],
  [[-78, 8], [-72, 12], [-60, 10], [-50, 0], [-35, -5], [-38, -13], [-48, -25], [-58, -35], [-65, -42], [-68, -52],
   [-72, -52], [-75, -45], [-72, -30], [-70, -18], [-76, -14], [-81, -5], [-80, 1], [-78, 8]],
  [[-10, 36], [-9, 43], [-1, 44], [-5, 48], [2, 51], [8, 54], [8, 57], [5, 62], [15, 69], [25, 71], [40, 68],
   [60, 70], [80, 73], [100, 77], [120, 73], [140, 72], [160, 70], [180, 68], [180, 65], [170, 60], [160, 60],
   [155, 58], [142, 53], [140, 46], [132, 43], [128, 38], [126, 35], [122, 40], [121, 31], [118, 24], [110, 20],
   [108, 12], [105, 9], [100, 13], [99, 7], [103, 1], [98, 8], [97, 16], [92, 22], [88, 22], [80, 15], [77, 8],
   [73, 18], [67, 25], [58, 25], [56, 27], [50, 30], [48, 30], [52, 24], [56, 24], [59, 22], [52, 16], [44, 12],
   [43, 15], [39, 22], [35, 28], [34, 31], [36, 36], [28, 37], [26, 40], [24, 38], [22, 37], [20, 40], [16, 38],
   [12, 44], [9, 44], [3, 43], [-1, 37], [-6, 36], [-10, 36]],
  [[-5, 50], [1, 51], [2, 53], [-2, 56], [-3, 58], [-6, 57], [-5, 55], [-3, 54], [-5, 52], [-5, 50]],
  [[-10, 52], [-6, 52], [-6, 55], [-10, 54], [-10, 52]],
  [[-17, 21], [-10, 30], [-6, 36], [10, 37], [11, 33], [20, 31], [32, 31], [35, 28], [43, 12], [51, 12], [40, -3],
   [40, -15], [35, -25], [27, -34], [18, -35], [12, -18], [13, -6], [9, 4], [-8, 4], [-17, 15], [-17, 21]],
  [[44, -25], [50, -15], [49, -12], [44, -16], [44, -25]],
  [[114, -22], [122, -18], [130, -12], [137, -12], [142, -11], [146, -19], [153, -26], [150, -37], [141, -38],
   [131, -31], [115, -34], [114, -22]],
  [[130, 31], [135, 34], [140, 35], [142, 40], [141, 45], [143, 44], [140, 38], [136, 37], [132, 34], [130, 31]],
  [[172, -34], [178, -38], [174, -41], [171, -45], [167, -46], [172, -41], [172, -34]],
];

function overviewView(view) {
  const cards = el("div", { class: "cards" });
  const empty = el("div");
  const mapBox = el("div", { class: "chart map", id: "world-map" });
  const regionsBox = el("div", { id: "regions" });
  const modelsBox = el("div", { class: "chart", id: "gpus-by-model" });
  const useBox = el("div", { class: "chart", id: "gpu-use" });
  const utilBox = el("div", { class: "chart", id: "utilization" });
  view.append(el("h1", { text: "Network" }), cards, empty,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Nodes by region" }), mapBox, regionsBox),
      el("div", { class: "panel" }, el("h2", { text: "What every GPU is doing" }), useBox)),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "GPUs by model" }), modelsBox),
      el("div", { class: "panel" }, el("h2", { text: "GPU utilization, last 30 minutes" }), utilBox)));
  startView(async () => {
    const o = await api("/v1/dashboard/overview");
    const jobs = o.jobs_by_state;
    const running = jobs ? (jobs.running || 0) + (jobs.starting || 0) : null;
    cards.replaceChildren(
      card("Nodes online", o.nodes_online, "nodes-online"), card("Nodes lost", o.nodes_lost, "nodes-lost"),
      card("GPUs", o.gpus_total, "gpus-total"), card("CPUs online", o.cpus_total, "cpus-total"),
      card("Jobs running", running === null ? "-" : running, "jobs-running"),
      card("Jobs waiting", jobs ? jobs.pending || 0 : "-", "jobs-pending"));
    const hints = [];
    if (!o.regions.length) {
      hints.push(emptyState("No nodes yet: this network has no machines.",
        "Give a machine to the network: make a provider token with ", cmd("ceti token create provider --provider NAME"),
        " then run ", cmd("ceti agent --server URL --token PROVIDER_TOKEN --region eu-west"),
        " on it. It appears here within a few seconds."));
    }
    if (jobs && !Object.values(jobs).some((n) => n > 0)) {
      hints.push(emptyState("No jobs yet.", "Submit one with ", cmd("ceti run examples/hello.yaml --follow"),
        " and watch it on the Jobs page."));
    }
    empty.replaceChildren(...hints);
    drawMap(mapBox, o.regions);
    regionsBox.replaceChildren(table(["region", "where", "online", "lost", "GPUs", "hosts"],
      o.regions.map((r) => [r.region, r.placed ? r.label : "(no coordinates: add it to regions.json)",
        String(r.online), String(r.lost), String(r.gpus), r.nodes.join(", ")]), "No regions yet."));
    for (const row of regionsBox.querySelectorAll("tbody tr")) row.setAttribute("data-testid", "region-row");
    const uses = Object.entries(o.gpu_use).filter(([, n]) => n > 0);
    if (!o.gpus_total) {
      noChart(useBox, o.regions.length
        ? "No GPUs on the nodes so far (CPU-only machines)." : "GPUs appear here once nodes join.");
      noChart(modelsBox, "No GPU models yet.");
    } else {
      plot(useBox, [{ type: "pie", hole: 0.5, labels: uses.map(([u]) => useLabel(u)), values: uses.map(([, n]) => n),
        marker: { colors: uses.map(([u]) => COLORS[u] || "#7ee787") }, sort: false, textinfo: "value+label" }],
        { showlegend: false });
      const kinds = ["developer", ...o.networks, "other-network", "idle"]
        .filter((u) => o.gpus_by_model.some((m) => m.uses[u]));
      plot(modelsBox, kinds.map((u) => ({ type: "bar", name: useLabel(u), x: o.gpus_by_model.map((m) => m.model),
        y: o.gpus_by_model.map((m) => m.uses[u] || 0), marker: { color: COLORS[u] } })),
        { barmode: "stack", yaxis: { title: "GPUs", dtick: 1, gridcolor: "#2a3441" } });
    }
    if (!o.utilization.length) {
      noChart(utilBox, "Utilization is charted once nodes with GPUs join.");
    } else {
      const x = o.utilization.map((p) => new Date(p.at * 1000));
      plot(utilBox, [
        { x, y: o.utilization.map((p) => p.developer), name: "developer work", stackgroup: "busy",
          line: { color: COLORS.developer } },
        { x, y: o.utilization.map((p) => p.network), name: "network work", stackgroup: "busy",
          line: { color: COLORS.bittensor } },
        { x, y: o.utilization.map((p) => p.total), name: "GPUs", mode: "lines",
          line: { color: "#8b98a8", dash: "dot" } },
      ], { yaxis: { title: "GPUs", rangemode: "tozero", gridcolor: "#2a3441" }, xaxis: { gridcolor: "#2a3441" } });
    }
  });
}

function card(label, value, testid) {
  return el("div", { class: "card", "data-testid": testid },
    el("div", { class: "value", text: String(value) }), el("div", { class: "label", text: label }));
}

function drawMap(box, regions) {
  const land = LAND.map((poly) => ({ x: poly.map((p) => p[0]), y: poly.map((p) => p[1]), mode: "lines",
    fill: "toself", fillcolor: "#1f2833", line: { color: "#2f3b4a", width: 1 }, hoverinfo: "skip",
    showlegend: false }));
  const placed = regions.filter((r) => r.placed);
  const marker = (rows, color, name, key) => ({
    x: rows.map((r) => r.lon), y: rows.map((r) => r.lat), mode: "markers+text", name,
    text: rows.map((r) => `${r.region} (${r[key]})`), textposition: "top center", textfont: { color: "#e6edf3" },
    hovertext: rows.map((r) => `${r.label}: ${r.online} online, ${r.lost} lost, ${r.gpus} GPUs`), hoverinfo: "text",
    marker: { size: rows.map((r) => 10 + 4 * Math.sqrt(r[key])), color, line: { color: "#0f1419", width: 1 } } });
  const online = placed.filter((r) => r.online > 0);
  const lost = placed.filter((r) => r.lost > 0 && r.online === 0);
  plot(box, [...land, marker(online, "#3fb950", "online", "online"), marker(lost, "#f85149", "lost", "lost")], {
    xaxis: { range: [-180, 180], visible: false, fixedrange: true },
    yaxis: { range: [-58, 84], visible: false, fixedrange: true, scaleanchor: "x" },
    margin: { l: 0, r: 0, t: 0, b: 0 }, showlegend: false, dragmode: false });
}

// -- jobs --------------------------------------------------------------------------------------------------------------

function jobsView(view) {
  const filter = el("select", { id: "state-filter", onchange: () => startView(load) },
    ["", "pending", "starting", "running", "succeeded", "failed", "cancelled", "unschedulable"]
      .map((s) => el("option", { value: s, text: s || "all states" })));
  const box = el("div", { id: "jobs-table" });
  view.append(el("h1", { text: "Jobs" }), el("div", { class: "toolbar" }, filter), el("div", { class: "panel" }, box));
  const load = async () => {
    const state = filter.value;
    const rows = await api(`/v1/dashboard/jobs${state ? `?state=${encodeURIComponent(state)}` : ""}`);
    if (!rows.length) {
      box.replaceChildren(state ? el("div", { class: "empty", text: `No ${state} jobs.` })
        : emptyState("No jobs yet.", "Submit one with ", cmd("ceti run examples/hello.yaml --follow"),
          " (a project token sees its own project's jobs)."));
      return;
    }
    box.replaceChildren(table(["job", "name", "state", "kind", "node", "region", "GPU", "runtime", "cost (est.)", "prio"],
      rows.map((j) => [el("a", { href: `#/jobs/${j.id}`, class: "mono", "data-testid": "job-link", text: short(j.id) }),
        j.name, stateBadge(j.state), el("span", { class: `pill ${useClass(j.kind)}`, text: j.kind }),
        j.node_id ? el("a", { href: `#/nodes/${j.node_id}`, text: j.hostname || short(j.node_id) }) : "-",
        j.region || "-", j.gpu || "-", fmtDuration(j.runtime_s), fmtMoney(j.cost_estimate), String(j.priority)]),
      "No jobs."));
  };
  startView(load);
}

function jobView(view, id) {
  const head = el("div");
  const facts = el("div", { class: "panel" });
  const attempts = el("div", { class: "panel" });
  const events = el("div", { class: "panel" });
  const logs = el("pre", { class: "logs", id: "logs", "data-testid": "logs" });
  const logNote = el("p", { class: "muted", id: "logs-note" });
  view.append(head, el("div", { class: "grid" }, facts, el("div", { class: "panel" }, el("h2", { text: "Logs" }), logs, logNote)),
    attempts, events);
  let after = 0;
  let finishedAndDrained = false;
  startView(async (mine) => {
    const j = await api(`/v1/dashboard/jobs/${encodeURIComponent(id)}`);
    head.replaceChildren(el("h1", {}, `Job ${j.name} `, stateBadge(j.state)),
      el("p", { class: "muted" }, el("span", { class: "mono", text: j.id }), j.reason ? ` — ${j.reason}` : ""));
    facts.replaceChildren(el("h2", { text: "Job" }), el("dl", { class: "facts" },
      fact("kind", j.kind), fact("priority", String(j.priority)), fact("node", j.hostname || "-"),
      fact("region", j.region || "-"), fact("GPU", j.gpu || "-"), fact("runtime", fmtDuration(j.runtime_s)),
      fact("cost (estimate at the node's ask)", fmtMoney(j.cost_estimate)), fact("attempts", String(j.attempts)),
      fact("exit code", j.exit_code === null ? "-" : String(j.exit_code)), fact("submitted", fmtDate(j.created_at)),
      fact("command", el("code", { text: (j.spec.command || []).join(" ") || "(image entrypoint)" }))));
    attempts.replaceChildren(el("h2", { text: "Attempts" }), table(["#", "node", "state", "GPU", "started", "ended", "exit", "stop reason"],
      j.allocations.map((a) => [String(a.attempt), el("a", { href: `#/nodes/${a.node_id}`, text: a.hostname || short(a.node_id) }),
        stateBadge(a.state), a.gpu || "-", fmtTime(a.started_at), fmtTime(a.ended_at),
        a.exit_code === null ? "-" : String(a.exit_code), a.stop_reason || ""]), "Not placed yet."));
    events.replaceChildren(el("h2", { text: "Events" }), table(["time", "event", "from", "to", "reason"],
      j.events.map((e) => [fmtTime(e.at), e.kind, e.from_state || "", e.to_state || "", e.reason]), "No events."));
    if (finishedAndDrained) return;
    for (let page = 0; page < 20 && mine === generation; page += 1) {  // bounded: at most 20 pages per refresh
      const part = await api(`/v1/dashboard/jobs/${encodeURIComponent(id)}/logs?after_id=${after}`);
      for (const c of part.chunks) logs.append(el("span", { class: c.stream, text: c.data }));
      after = part.next_after_id;
      if (!part.chunks.length) {
        if (part.finished) finishedAndDrained = true;
        break;
      }
      logs.scrollTop = logs.scrollHeight;
    }
    logNote.textContent = finishedAndDrained
      ? (j.log_truncated ? "The job ended; its output was cut at the server's log limit." : "The job ended.")
      : (logs.textContent ? "Live: new output appears as the job writes it." : "Waiting for output…");
  }, LOG_REFRESH_MS);
}

function fact(label, value) {
  return [el("dt", { text: label }), el("dd", {}, value)];
}

// -- nodes -------------------------------------------------------------------------------------------------------------

function nodesView(view) {
  const box = el("div", { id: "nodes-table" });
  view.append(el("h1", { text: "Nodes" }), el("div", { class: "panel" }, box));
  startView(async () => {
    const rows = await api("/v1/dashboard/nodes");
    if (!rows.length) {
      box.replaceChildren(emptyState("No nodes yet.", "Run ", cmd("ceti agent --server URL --token PROVIDER_TOKEN"),
        " on a machine to give it to the network."));
      return;
    }
    box.replaceChildren(table(["host", "region", "state", "GPUs", "GPU use", "CPUs", "memory", "$/GPU-h",
      "heartbeat", "work", "reliability", "earnings"],
      rows.map((n) => [el("a", { href: `#/nodes/${n.id}`, "data-testid": "node-link", text: n.hostname }), n.region,
        stateBadge(n.state), n.gpus || "none", usePills(n.gpu_use), String(n.cpus), fmtMiB(n.memory_mib),
        n.price_per_gpu_hour.toFixed(2), `${n.heartbeat_age_s.toFixed(0)} s ago`, String(n.active_allocations),
        fmtReliability(n.reliability), fmtEarnings(n.earnings)]),
      "No nodes."));
  });
}

// the probability that an hour of work placed on the node finishes; a string until it is measured
function fmtEarnings(x) {
  // what the ledger credited the provider for this node (its ask for the work it ran)
  return typeof x === "number" ? el("span", { text: fmtMoney(x) }) : el("span", { class: "muted", text: String(x) });
}

function fmtReliability(r) {
  if (typeof r !== "number") return el("span", { class: "muted", text: String(r) });
  return el("span", { title: "probability that an hour of work placed here finishes", text: `${(r * 100).toFixed(1)}% per hour` });
}

function usePills(uses) {
  const parts = Object.entries(uses).filter(([, n]) => n > 0);
  if (!parts.length) return el("span", { class: "muted", text: "-" });
  return el("span", {}, parts.map(([u, n]) => el("span", { class: `pill ${useClass(u)}`, text: `${n} ${u}` })));
}

function nodeView(view, id) {
  const head = el("div");
  const hw = el("div", { class: "panel" });
  const gpus = el("div", { class: "panel" });
  const work = el("div", { class: "panel" });
  const events = el("div", { class: "panel" });
  view.append(head, el("div", { class: "grid" }, hw, gpus), work, events);
  startView(async () => {
    const n = await api(`/v1/dashboard/nodes/${encodeURIComponent(id)}`);
    head.replaceChildren(el("h1", {}, `Node ${n.hostname} `, stateBadge(n.state)),
      el("p", { class: "muted" }, el("span", { class: "mono", text: n.id }), ` — region ${n.region}`));
    const h = n.hardware;
    hw.replaceChildren(el("h2", { text: "Hardware and terms" }), el("dl", { class: "facts", "data-testid": "hardware" },
      fact("CPUs", String(h.cpus)), fact("memory", fmtMiB(h.memory_mib)), fact("disk", fmtMiB(h.disk_mib)),
      fact("GPU driver", h.gpu_driver || "-"), fact("OS", h.os || "-"), fact("agent", h.agent_version || "-"),
      fact("ask per GPU-hour", `$${n.price_per_gpu_hour.toFixed(2)}`),
      fact("ask per CPU-hour", `$${n.price_per_cpu_hour.toFixed(2)}`),
      fact("last heartbeat", `${n.heartbeat_age_s.toFixed(1)} s ago`), fact("registered", fmtDate(n.registered_at)),
      fact("reliability", fmtReliability(n.reliability)),
      fact("earnings", fmtEarnings(n.earnings))));
    gpus.replaceChildren(el("h2", { text: "GPUs now" }), table(["#", "model", "VRAM", "doing"],
      n.gpu_detail.map((g) => [String(g.index), g.model,
        fmtMiB((h.gpus.find((x) => x.index === g.index) || {}).vram_mib),
        el("span", {}, el("span", { class: `pill ${useClass(g.use)}`, text: useLabel(g.use) }),
          g.job_id ? el("a", { href: `#/jobs/${g.job_id}`, class: "mono", text: short(g.job_id) }) : "")]),
      "This node has no GPUs (CPU work only)."));
    work.replaceChildren(el("h2", { text: "Current work" }), table(["job", "state", "kind", "GPUs", "since"],
      n.current_work.map((w) => [w.job_id ? el("a", { href: `#/jobs/${w.job_id}`, text: w.name }) : w.name,
        stateBadge(w.state), w.kind, w.gpu_indices.join(", ") || "-", fmtTime(w.started_at)]), "Idle: no work on this node now."));
    events.replaceChildren(el("h2", { text: "Node events" }), table(["time", "event", "from", "to", "reason"],
      n.events.map((e) => [fmtTime(e.at), e.kind, e.from_state || "", e.to_state || "", e.reason]), "No events."));
  });
}

// -- scheduler ---------------------------------------------------------------------------------------------------------

function schedulerView(view) {
  const cards = el("div", { class: "cards" });
  const latency = el("div", { class: "chart", id: "round-latency" });
  const pending = el("div", { id: "pending-reasons" });
  const pre = el("div", { class: "chart", id: "preemptions" });
  view.append(el("h1", { text: "Scheduler" }), cards,
    el("div", { class: "grid" },
      el("div", { class: "panel" }, el("h2", { text: "Round latency (latest rounds)" }), latency),
      el("div", { class: "panel" }, el("h2", { text: "Pending jobs by reason" }), pending)),
    el("div", { class: "panel" }, el("h2", { text: "Pre-emptions, last hour" }), pre));
  startView(async () => {
    const s = await api("/v1/dashboard/scheduler");
    cards.replaceChildren(card("Rounds", s.rounds, "rounds"), card("p50 round", fmtMs(s.p50_s), "p50"),
      card("p95 round", fmtMs(s.p95_s), "p95"), card("slowest", fmtMs(s.max_s), "max"),
      card("last round", fmtTime(s.last_round_at), "last-round"),
      card("pre-emptions (1 h)", s.jobs_visible ? s.preemptions_in_window : "-", "preemptions-hour"));
    if (s.last_error) cards.append(el("div", { class: "card error", text: `last error: ${s.last_error}` }));
    if (!s.recent_round_s.length) {
      noChart(latency, "No scheduling round has run yet in this server.");
    } else {
      plot(latency, [{ y: s.recent_round_s.map((v) => v * 1000), mode: "lines", name: "round",
        line: { color: COLORS.developer } }], { yaxis: { title: "ms", rangemode: "tozero", gridcolor: "#2a3441" },
        xaxis: { title: "round (oldest → newest)", gridcolor: "#2a3441" }, showlegend: false });
    }
    if (!s.jobs_visible) {
      pending.replaceChildren(el("div", { class: "empty", text: "Provider tokens see nodes, not jobs." }));
    } else {
      pending.replaceChildren(table(["reason", "jobs"], s.pending_by_reason.map((r) => [r.reason, String(r.jobs)]),
        "No job is waiting: everything submitted has a place."));
    }
    plot(pre, [{ type: "bar", x: s.preemptions.map((p) => new Date(p.at * 1000)), y: s.preemptions.map((p) => p.count),
      marker: { color: COLORS.render } }], { yaxis: { title: "pre-emptions", rangemode: "tozero", gridcolor: "#2a3441" },
      showlegend: false });
  });
}

// -- start -------------------------------------------------------------------------------------------------------------

document.getElementById("login-form").addEventListener("submit", signIn);
document.getElementById("logout").addEventListener("click", () => { showLogin("Signed out."); });
window.addEventListener("hashchange", route);
(async () => {
  if (!sessionStorage.getItem(TOKEN_KEY)) { showLogin(); return; }
  try { await whoami(); route(); } catch (e) { showLogin(e.message); }
})();
