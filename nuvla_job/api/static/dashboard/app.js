// The nuvla-job dashboard: polls the job API's JSON every POLL_MS and redraws.
// No framework, no build step; data is put in the page with textContent only (job fields
// are written by users and actions, so never as HTML).
"use strict";

const POLL_MS = 2000;
const RECENT_JOBS = 20;
const SHOWN_IN_FLIGHT = 8;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (selector) => document.querySelector(selector);
let timer = null;
let polls = 0;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = (data && data.message) || `${response.status} ${response.statusText}`;
    throw new HttpError(response.status, message);
  }
  return data;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = cell instanceof Node ? cell : el("td", cell);
    tr.appendChild(td.tagName === "TD" ? td : wrap(td));
  }
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function fill(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...rows);
  if (!rows.length) {
    const td = el("td", emptyText);
    td.colSpan = columns;
    const tr = el("tr", null, "empty");
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
}

function shortTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return isNaN(date) ? String(iso) : date.toLocaleTimeString();
}

// -- panels ------------------------------------------------------------------------------

function drawQueue(data) {
  const samples = data.samples || [];
  const last = samples[samples.length - 1];
  $("#queue-entries").textContent = last ? last.entries : "–";
  $("#queue-taken").textContent = last ? last.taken : "–";
  const svg = $("#queue-chart");
  svg.replaceChildren();
  const width = 600, height = 160, pad = 14;
  const top = Math.max(1, ...samples.map((s) => s.entries), ...samples.map((s) => s.taken));
  // Grid lines at 0 and at the top of the scale (said in words below the figures).
  for (const y of [pad, height - 2]) {
    const line = document.createElementNS(SVG_NS, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", 0); line.setAttribute("x2", width);
    line.setAttribute("y1", y); line.setAttribute("y2", y);
    svg.appendChild(line);
  }
  if (samples.length < 1) {
    $("#queue-span").textContent = "no sample yet";
    return;
  }
  const t0 = samples[0].time;
  const span = Math.max(last.time - t0, data.interval || 1);
  $("#queue-span").textContent =
    `last ${Math.round(span)} s, a sample every ${data.interval} s; top line: ${top}`;
  for (const key of ["entries", "taken"]) {
    const points = samples.map((s) => {
      const x = ((s.time - t0) / span) * width;
      const y = height - 2 - (s[key] / top) * (height - 2 - pad);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (points.length === 1) points.push(`${width},${points[0].split(",")[1]}`);
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("class", key);
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
  }
}

function drawExecutors(data) {
  const executors = data.executors || [];
  $("#executor-count").textContent = `(${executors.length})`;
  const rows = executors.map((e) => {
    const ids = e["in-flight"] || [];
    const cell = document.createElement("td");
    cell.className = "in-flight";
    cell.appendChild(el("b", e["in-flight-count"] ?? ids.length));
    for (const id of ids.slice(0, SHOWN_IN_FLIGHT)) {
      const link = jobLink(id);
      link.classList.add("job-id");
      cell.appendChild(link);
    }
    if (ids.length > SHOWN_IN_FLIGHT) {
      cell.appendChild(el("span", `+${ids.length - SHOWN_IN_FLIGHT} more`, "muted"));
    }
    const who = el("td", null, "name");
    const name = el("a", e.name ?? e.node);
    name.href = `#/executor/${encodeURIComponent(e.name ?? e.node)}`;
    who.appendChild(name);
    who.appendChild(el("span", e.error ?? `${e.host} · pid ${e.pid}`, "detail"));
    const tr = row([who, e.concurrency, el("td", shortTime(e.started), "time"), cell]);
    tr.dataset.name = e.name ?? e.node;
    return tr;
  });
  fill($("#executors tbody"), rows, "no executor announced", 4);
}

function drawLeaders(data) {
  const rows = (data.distributions || []).map((d) => {
    const tr = row([d.distribution, d.leader ?? "none", (d.contenders || []).length]);
    tr.dataset.distribution = d.distribution;
    return tr;
  });
  fill($("#leaders tbody"), rows, "no distribution running", 3);
}

function drawJobs(data) {
  const rows = (data.resources || []).map((job) => {
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = job.progress || 0;
    const progressCell = wrap(progress);
    progressCell.appendChild(el("span", ` ${job.progress || 0}%`, "progress-value"));
    const actionCell = document.createElement("td");
    const cancel = (job.operations || []).find((op) => op.rel === "cancel");
    if (cancel) {
      const button = el("button", "Cancel", "cancel");
      button.type = "button";
      button.addEventListener("click", () => cancelJob(job.id, cancel.href, button));
      actionCell.appendChild(button);
    }
    const retry = (job.operations || []).find((op) => op.rel === "retry");
    if (retry) {
      const button = el("button", "Retry", "retry");
      button.type = "button";
      button.addEventListener("click", () => retryJob(job.id, retry.href, button));
      actionCell.appendChild(button);
    }
    const message = el("td", job["status-message"] || "", "message");
    message.title = job["status-message"] || "";
    const tr = row([
      wrap(jobLink(job.id)), job.action, el("td", job.state, `state ${job.state}`),
      progressCell, el("td", shortTime(job.updated), "time"), message,
      actionCell,
    ]);
    tr.dataset.id = job.id;
    tr.dataset.state = job.state;
    return tr;
  });
  fill($("#jobs tbody"), rows, "no job yet", 7);
}

async function cancelJob(jobId, href, button) {
  if (!window.confirm(`Cancel ${jobId}?`)) return;
  button.disabled = true;
  try {
    await call("POST", `/api/${href}`, {});
    showMessage("");
  } catch (error) {
    showMessage(`cancel ${jobId}: ${error.message}`);
    button.disabled = false;
  }
  poll();
}

// A FAILED job queued again as one more attempt (the scheduler runs it at its next tick).
async function retryJob(jobId, href, button) {
  button.disabled = true;
  try {
    await call("POST", `/api/${href}`, {});
    showMessage("");
  } catch (error) {
    showMessage(`retry ${jobId}: ${error.message}`);
    button.disabled = false;
  }
  poll();
}

// -- polling and login -------------------------------------------------------------------

function showMessage(text) {
  $("#message").textContent = text;
}

const RECENT = `/api/job?orderby=updated:desc&last=${RECENT_JOBS}`;
const panels = [
  ["/api/dashboard/queue", drawQueue, "#queue"],
  ["/api/dashboard/executors", drawExecutors, "#executors"],
  ["/api/dashboard/leaders", drawLeaders, "#leaders"],
  [RECENT, drawJobs, "#jobs"],
];

// The jobs panel shows every recent job, or the FAILED ones only (the dead letters).
function jobsPath() {
  const failed = $("#jobs-failed").checked;
  return failed ? `${RECENT}&filter=${encodeURIComponent("state='FAILED'")}` : RECENT;
}

// A link to one job's page (#/job/<uuid>).
function jobLink(id) {
  const link = el("a", id, "id");
  link.href = `#/${id}`;
  return link;
}

async function poll() {
  clearTimeout(timer);
  // The overview's panels are polled only while it is shown (views.js polls the others).
  if (currentView() !== "overview") {
    timer = setTimeout(poll, POLL_MS);
    return;
  }
  panels[3][0] = jobsPath();
  const results = await Promise.allSettled(panels.map(([path]) => call("GET", path)));
  if (results.some((r) => r.status === "rejected" && r.reason.status === 401)) {
    showLogin();
    return;
  }
  const errors = [];
  results.forEach((result, i) => {
    const [path, draw, panel] = panels[i];
    const section = $(panel);
    if (result.status === "fulfilled") {
      section.classList.remove("failed");
      draw(result.value);
    } else {
      section.classList.add("failed");
      errors.push(`${path.split("?")[0]}: ${result.reason.message}`);
    }
  });
  showMessage(errors.join(" · "));
  polls += 1;
  document.body.dataset.polls = String(polls);
  $("#status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  timer = setTimeout(poll, POLL_MS);
}

function showLogin() {
  clearTimeout(timer);
  $("#board").hidden = true;
  for (const view of document.querySelectorAll("main.view")) view.hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  $("#status").textContent = "not logged in";
  $("#login").hidden = false;
}

function showBoard(session) {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  route();
  $("#who").textContent = session ? session.identifier : "";
  poll();
}

async function start() {
  try {
    const sessions = await call("GET", "/api/session");
    const session = (sessions.resources || [])[0];
    if (session) showBoard(session);
    else showLogin();
  } catch (error) {
    $("#status").textContent = `job API unreachable: ${error.message}`;
    timer = setTimeout(start, POLL_MS);
  }
}

async function login(event) {
  event.preventDefault();
  const kind = document.querySelector("input[name=kind]:checked").value;
  const name = $("#login-name").value;
  const secret = $("#login-secret").value;
  const template = kind === "api-key"
    ? { href: "session-template/api-key", key: name, secret }
    : { href: "session-template/password", username: name, password: secret };
  $("#login-error").textContent = "";
  try {
    await call("POST", "/api/session", { template });
    $("#login-secret").value = "";
    await start();
  } catch (error) {
    $("#login-error").textContent = error.message;
  }
}

async function logout() {
  try {
    const sessions = await call("GET", "/api/session");
    const session = (sessions.resources || [])[0];
    if (session) await call("DELETE", `/api/${session.id}`);
  } catch (error) {
    showMessage(`log out: ${error.message}`);
  }
  showLogin();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#jobs-failed").addEventListener("change", poll);
  start();
});
