// The dashboard's views besides the overview, one per URL hash, so that a view can be
// shared: #/jobs?<query>, #/job/<uuid>, #/actions?period=S, #/fleet?window=S,
// #/executor/<name>. Uses app.js's call, el, $ and jobLink. Data goes in with textContent
// only; filters are built with quoted, escaped values (never pasted text).
"use strict";

const VIEW_POLL_MS = 2000;
const PAGE_SIZE = 25;
const FINAL = ["SUCCESS", "FAILED", "CANCELED"];
const COLOURS = ["#2f6fde", "#e0812b", "#1f9d55", "#d33a3a", "#7b4fc9", "#6b7385", "#c2a100"];
let viewTimer = null;
let charts = {};
let progressSamples = { id: null, points: [] };

function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  return { path: path || "", params: new URLSearchParams(query || "") };
}

function currentView() {
  const { path } = parseHash();
  if (path.startsWith("job/")) return "job";
  if (path.startsWith("executor/")) return "executor";
  return ["jobs", "actions", "fleet"].includes(path) ? path : "overview";
}

// A CIMI string literal: the value quoted, its quotes and backslashes escaped.
function quote(value) {
  return `'${String(value).replace(/[\\']/g, (c) => `\\${c}`)}'`;
}

function isoOf(localValue) {
  const date = new Date(localValue);
  return isNaN(date) ? null : date.toISOString();
}

// The CIMI filter of the search form's fields (each one a comparison, all and-ed).
function searchFilter(params) {
  const parts = [];
  const field = (name, path) => {
    const value = params.get(name);
    if (value) parts.push(`${path}=${quote(value)}`);
  };
  field("state", "state");
  field("action", "action");
  field("tag", "tags");
  field("target", "target-resource/href");
  field("parent", "parent-job");
  const since = params.get("since") && isoOf(params.get("since"));
  const until = params.get("until") && isoOf(params.get("until"));
  if (since) parts.push(`updated>=${quote(since)}`);
  if (until) parts.push(`updated<${quote(until)}`);
  if (params.get("filter")) parts.push(`(${params.get("filter")})`);
  return parts.join(" and ");
}

function clearTimers() {
  clearTimeout(viewTimer);
}

function show(view) {
  $("#board").hidden = view !== "overview";
  for (const main of document.querySelectorAll("main.view")) {
    main.hidden = main.id !== `view-${view}`;
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.id === `nav-${view === "job" ? "jobs" : view}`);
  }
}

function route() {
  clearTimers();
  const view = currentView();
  show(view);
  document.body.dataset.view = view;
  if (view === "overview") poll();
  else refresh();
}

async function refresh() {
  clearTimers();
  const view = currentView();
  const draw = { jobs: drawSearch, job: drawJob, actions: drawActions, fleet: drawFleet,
    executor: drawExecutor }[view];
  try {
    await draw(parseHash());
    document.body.dataset.drawn = view;
  } catch (error) {
    if (error.status === 401) {
      showLogin();
      return;
    }
    const target = $(`#view-${view} .error`) || $("#message");
    if (target) target.textContent = error.message;
  }
  viewTimer = setTimeout(refresh, VIEW_POLL_MS);
}

function stateCell(state) {
  return el("td", state, `state ${state}`);
}

// -- find jobs ---------------------------------------------------------------------------

function fillForm(params) {
  const form = $("#search-form");
  for (const input of form.elements) {
    if (!input.name || document.activeElement === input) continue;
    input.value = params.get(input.name) || (input.name === "orderby" ? "updated:desc" : "");
  }
}

async function drawSearch({ params }) {
  fillForm(params);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  const query = new URLSearchParams({
    orderby: params.get("orderby") || "updated:desc",
    first: String((page - 1) * PAGE_SIZE + 1),
    last: String(page * PAGE_SIZE),
  });
  const filter = searchFilter(params);
  if (filter) query.set("filter", filter);
  let data;
  try {
    data = await call("GET", `/api/job?${query}`);
    $("#search-error").textContent = "";
  } catch (error) {
    if (error.status === 401) throw error;
    $("#search-error").textContent = error.message;
    return;
  }
  const rows = (data.resources || []).map((job) => {
    const message = el("td", (job["status-message"] || "").split("\n")[0], "message");
    const tr = row([wrap(jobLink(job.id)), job.action, stateCell(job.state),
      `${job.progress ?? 0}%`, el("td", shortTime(job.updated), "time"), message]);
    tr.dataset.id = job.id;
    tr.dataset.state = job.state;
    return tr;
  });
  fill($("#search-results tbody"), rows, "no job matches", 6);
  const pages = Math.max(1, Math.ceil(data.count / PAGE_SIZE));
  $("#search-count").textContent = `(${data.count})`;
  $("#page-info").textContent = `page ${page} of ${pages}`;
  $("#page-prev").disabled = page <= 1;
  $("#page-next").disabled = page >= pages;
}

function searchFromForm(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams();
  for (const input of $("#search-form").elements) {
    if (input.name && input.value) params.set(input.name, input.value);
  }
  location.hash = `#/jobs?${params}`;
}

function turnPage(step) {
  const { params } = parseHash();
  const page = Math.max(1, (parseInt(params.get("page") || "1", 10) || 1) + step);
  params.set("page", String(page));
  location.hash = `#/jobs?${params}`;
}

// -- one job -----------------------------------------------------------------------------

function prettyPayload(text) {
  if (text === undefined || text === null) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return String(text);
  }
}

function operationButton(job, rel, label) {
  const op = (job.operations || []).find((o) => o.rel === rel);
  if (!op) return null;
  const button = el("button", label, rel);
  button.type = "button";
  button.addEventListener("click", async () => {
    if (rel === "cancel" && !window.confirm(`Cancel ${job.id}?`)) return;
    button.disabled = true;
    try {
      await call("POST", `/api/${op.href}`, {});
      $("#job-error").textContent = "";
    } catch (error) {
      $("#job-error").textContent = `${rel}: ${error.message}`;
    }
    refresh();
  });
  return button;
}

async function drawJob({ path }) {
  const id = path; // "job/<uuid>"
  let job;
  try {
    job = await call("GET", `/api/${id}`);
  } catch (error) {
    // Refused (403), gone (404) or failed: nothing of another job stays on the page.
    $("#job-body").hidden = true;
    $("#job-title").replaceChildren(el("span", id, "mono"));
    if (error.status === 403) {
      throw new HttpError(403, "You may not see this job: its ACL grants you no right on it.");
    }
    throw error;
  }
  $("#job-load-error").textContent = "";
  $("#job-body").hidden = false;
  $("#job-title").replaceChildren(el("span", job.id, "mono"), el("span", ` ${job.action} `),
    el("span", job.state, `state ${job.state}`));
  $("#job-actions").replaceChildren(...["cancel", "retry"]
    .map((rel) => operationButton(job, rel, rel === "cancel" ? "Cancel" : "Retry"))
    .filter(Boolean));
  $("#job-message").textContent = job["status-message"] || "(none)";
  const errors = job["attempt-errors"] || [];
  $("#job-attempts").textContent = `(${job.attempts ?? 0} started)`;
  $("#job-attempt-errors").replaceChildren(...errors.map((line) => el("li", line)));
  $("#job-payload").textContent = prettyPayload(job.payload) || "(none)";
  drawProgress(job);
  const attributes = Object.keys(job).sort().filter((k) => k !== "operations")
    .map((key) => {
      const value = job[key];
      const text = typeof value === "string" ? value : JSON.stringify(value, null, 1);
      return row([el("th", key), el("td", text, "mono")]);
    });
  $("#job-attributes tbody").replaceChildren(...attributes);
  const parent = job["parent-job"];
  $("#job-parent").replaceChildren(parent ? jobLink(parent) : el("span", "none", "muted"));
  await drawChildren(job);
}

function drawProgress(job) {
  if (progressSamples.id !== job.id) progressSamples = { id: job.id, points: [] };
  const points = progressSamples.points;
  const now = Date.now() / 1000;
  if (!points.length && job.started) points.push([Date.parse(job.started) / 1000, 0]);
  const at = FINAL.includes(job.state) ? Date.parse(job.updated) / 1000 : now;
  if (!points.length || points[points.length - 1][0] < at) points.push([at, job.progress ?? 0]);
  const data = [points.map((p) => p[0]), points.map((p) => p[1])];
  lineChart("job-progress", $("#job-progress-chart"), data, [{ label: "progress %" }], 160);
}

async function drawChildren(job) {
  const filter = encodeURIComponent(`parent-job=${quote(job.id)}`);
  const data = await call("GET",
    `/api/job?filter=${filter}&aggregation=terms:state&orderby=updated:desc&last=20`);
  $("#job-children-count").textContent = `(${data.count})`;
  const buckets = ((data.aggregations || {})["terms:state"] || {}).buckets || [];
  $("#job-children-states").replaceChildren(...buckets.map((b) => {
    const link = el("a", `${b.key}: ${b.doc_count}`, `state ${b.key}`);
    link.href = `#/jobs?${new URLSearchParams({ parent: job.id, state: b.key })}`;
    return link;
  }));
  $("#job-children").replaceChildren(...(data.resources || []).map((child) => {
    const item = el("li");
    item.dataset.id = child.id;
    item.appendChild(jobLink(child.id));
    item.appendChild(el("span", ` ${child.state}`, `state ${child.state}`));
    return item;
  }));
  $("#job-family").hidden = false;
}

// -- per-action table --------------------------------------------------------------------

function periodLabel(seconds) {
  if (seconds < 3600) return `${seconds / 60} min`;
  if (seconds < 86400) return `${seconds / 3600} h`;
  return `${seconds / 86400} d`;
}

async function drawActions({ params }) {
  const period = params.get("period") || "3600";
  const data = await call("GET", `/api/dashboard/actions?period=${encodeURIComponent(period)}`);
  const select = $("#actions-period");
  if (!select.options.length) {
    for (const p of data.periods) select.appendChild(new Option(periodLabel(p), String(p)));
  }
  select.value = period;
  $("#actions-span").textContent = `jobs last updated from ${data.since} to ${data.until}`;
  const since = new Date(data.since);
  const rows = data.actions.map((a) => {
    const states = el("td");
    for (const [state, n] of Object.entries(a.states)) {
      const link = el("a", `${state} ${n}`, `state ${state}`);
      link.href = `#/jobs?${new URLSearchParams({ action: a.action, state })}`;
      states.appendChild(link);
      states.appendChild(document.createTextNode(" "));
    }
    const rate = el("td", null, "rate");
    const text = a["failure-rate"] === null ? "–" : `${(a["failure-rate"] * 100).toFixed(1)}%`;
    if (a.states.FAILED) {
      // The failed jobs of this action in this period, newest first.
      const local = new Date(since.getTime() - since.getTimezoneOffset() * 60000);
      const link = el("a", text, "failure-rate");
      link.href = `#/jobs?${new URLSearchParams({ action: a.action, state: "FAILED",
        since: local.toISOString().slice(0, 16) })}`;
      rate.appendChild(link);
    } else {
      rate.textContent = text;
    }
    const d = a.duration;
    const tr = row([a.action || "(none)", a.count, states, rate, d.p50 ?? "–", d.p90 ?? "–",
      d.p99 ?? "–", d.max ?? "–"]);
    tr.dataset.action = a.action;
    return tr;
  });
  fill($("#actions-table tbody"), rows, "no job in this period", 8);
}

// -- fleet charts (uPlot) ----------------------------------------------------------------

function lineChart(key, target, data, series, height) {
  const width = Math.max(300, target.clientWidth || 900);
  const old = charts[key];
  if (old && old.series.length === series.length + 1) {
    old.setData(data);
    return old;
  }
  if (old) old.destroy();
  const options = {
    width, height: height || 200,
    series: [{}, ...series.map((s, i) => ({ stroke: COLOURS[i % COLOURS.length], width: 2,
      ...s }))],
    axes: [{}, { size: 60 }],
  };
  charts[key] = new uPlot(options, data, target);
  return charts[key];
}

async function drawFleet({ params }) {
  const windowSeconds = params.get("window") || "900";
  $("#fleet-window").value = windowSeconds;
  const [data, executors] = await Promise.all([
    call("GET", `/api/dashboard/fleet?window=${encodeURIComponent(windowSeconds)}`),
    call("GET", "/api/dashboard/executors").catch(() => ({ executors: [] })),
  ]);
  const b = data.buckets;
  const times = b.map((x) => x.time);
  $("#fleet-span").textContent =
    `${b.length} points, ${data.bucket.toFixed(0)} s each (a sample every ${data.interval} s)`;
  lineChart("rate", $("#chart-rate"), [times, ...FINAL.map((s) => b.map((x) => x.rate[s]))],
    FINAL.map((s) => ({ label: s })));
  lineChart("queue", $("#chart-queue"),
    [times, b.map((x) => x.entries), b.map((x) => x.taken), b.map((x) => x.running)],
    [{ label: "entries" }, { label: "taken" }, { label: "running" }]);
  const series = [], columns = [times];
  for (const action of data.actions) {
    for (const p of ["p50", "p99"]) {
      series.push({ label: `${action} ${p}`, dash: p === "p99" ? [6, 4] : undefined });
      columns.push(b.map((x) => (x.durations[action] ? x.durations[action][p] : null)));
    }
  }
  lineChart(`duration-${data.actions.join(",")}`, $("#chart-duration"), columns, series);
  for (const key of Object.keys(charts)) {
    if (key.startsWith("duration-") && key !== `duration-${data.actions.join(",")}`) {
      charts[key].destroy();
      delete charts[key];
    }
  }
  const load = data["executor-load"];
  const total = Object.values(load).reduce((a, n) => a + n, 0);
  const rows = (executors.executors || []).map((e) => {
    const name = e.name ?? e.node;
    const link = el("a", name);
    link.href = `#/executor/${encodeURIComponent(name)}`;
    const share = total ? `${(((load[name] || 0) / total) * 100).toFixed(0)}%` : "–";
    const tr = row([wrap(link), e["in-flight-count"] ?? 0, share]);
    tr.dataset.name = name;
    return tr;
  });
  fill($("#fleet-executors tbody"), rows, "no executor announced", 3);
  document.body.dataset.fleetPoints = String(b.length);
}

// -- one executor ------------------------------------------------------------------------

async function drawExecutor({ path }) {
  const name = decodeURIComponent(path.slice("executor/".length));
  const [data, fleet] = await Promise.all([
    call("GET", "/api/dashboard/executors"),
    call("GET", "/api/dashboard/fleet?window=900"),
  ]);
  const found = (data.executors || []).filter((e) => (e.name ?? e.node) === name);
  $("#executor-title").textContent = `Executor ${name}`;
  $("#executor-detail").textContent = found.length
    ? found.map((e) => `${e.host} · pid ${e.pid} · concurrency ${e.concurrency} · started ` +
      `${shortTime(e.started)}`).join("; ")
    : "not announced now";
  const ids = found.flatMap((e) => e["in-flight"] || []);
  $("#executor-in-flight-count").textContent =
    `(${found.reduce((n, e) => n + (e["in-flight-count"] ?? 0), 0)})`;
  $("#executor-in-flight").replaceChildren(...ids.map((id) => {
    const item = el("li");
    item.appendChild(jobLink(id));
    return item;
  }));
  const load = fleet["executor-load"];
  const total = Object.values(load).reduce((a, n) => a + n, 0);
  $("#executor-share").textContent = total ? `${(((load[name] || 0) / total) * 100).toFixed(0)}%`
    : "–";
}

document.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", () => {
    if (!$("#nav").hidden) route();
  });
  $("#search-form").addEventListener("submit", searchFromForm);
  $("#page-prev").addEventListener("click", () => turnPage(-1));
  $("#page-next").addEventListener("click", () => turnPage(1));
  $("#actions-period").addEventListener("change", (e) => {
    location.hash = `#/actions?period=${e.target.value}`;
  });
  $("#fleet-window").addEventListener("change", (e) => {
    location.hash = `#/fleet?window=${e.target.value}`;
  });
});
