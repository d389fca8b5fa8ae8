// The /jobs page: one HTML document with inline CSS and JS, no external assets. It polls the
// JSON API under /api/jobs every second. Values are put into the page with textContent, never
// as HTML.
#include "page.hpp"

namespace keel::jobs_http::detail {

const char* const dashboard_html = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keel jobs</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
h1 { margin: 0 0 .2rem; } h2 { margin: 1.6rem 0 .4rem; font-size: 1.1rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .5rem; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #555; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; } .completed { color: #176f2c; } .discarded, .cancelled { color: #a12; } .retryable { color: #b76e00; } .running { color: #1759b8; }
button { font: inherit; padding: .15rem .55rem; margin-right: .25rem; cursor: pointer; border: 1px solid #bbb; border-radius: 4px; background: #f7f7f7; }
button:hover { background: #eee; } .error { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; color: #702; }
#detail { border: 1px solid #ddd; border-radius: 6px; padding: .6rem .9rem; background: #fafafa; }
#status { color: #777; font-size: 12px; } a { color: #1759b8; cursor: pointer; }
#chart { border: 1px solid #e3e3e3; background: #fff; } .depth { color: #b76e00; } .throughput { color: #176f2c; }
.chart-legend { margin: .2rem 0; } #chart-note { color: #777; font-size: 12px; }
.chart-axis { display: flex; justify-content: space-between; color: #777; font-size: 12px; }
</style></head><body>
<h1>keel jobs</h1>
<div id="status">loading…</div>

<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>pending</th><th>available</th><th>scheduled</th><th>running</th>
<th>retryable</th><th>completed</th><th>discarded</th><th>cancelled</th><th>done/min</th><th>failed/min</th><th></th></tr></thead>
<tbody></tbody></table>

<h2>Throughput and depth</h2>
<p class="chart-legend"><span class="depth">&#9632; waiting + running: <b id="depth-now">–</b></span> &nbsp;
<span class="throughput">&#9632; completed per minute: <b id="throughput-now">–</b></span>
<span id="chart-note"> — sampled while this page is open, the last ten minutes</span></p>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="100%" height="180" viewBox="0 0 900 180" preserveAspectRatio="none">
<g id="chart-grid"></g>
<polyline id="depth-line" fill="none" stroke="#b76e00" stroke-width="1.5" points=""/>
<polyline id="throughput-line" fill="none" stroke="#176f2c" stroke-width="1.5" points=""/>
</svg>
<div id="chart-axis" class="chart-axis"></div>

<h2>Recent failures</h2>
<table id="failures"><thead><tr><th>id</th><th>kind</th><th>queue</th><th>state</th><th>attempt</th><th>last error</th><th></th></tr></thead>
<tbody></tbody></table>

<h2>Job</h2>
<div id="detail"><em>click a job id</em></div>

<script>
"use strict";
const states = ["pending", "available", "scheduled", "running", "retryable", "completed", "discarded", "cancelled"];
let selected = null;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(method, path, body) {
  const response = await fetch(path, {method, headers: body ? {"Content-Type": "application/json"} : {},
                                      body: body ? JSON.stringify(body) : undefined});
  const data = await response.json();
  if (!response.ok) throw new Error((data.error || response.status) + ": " + (data.detail || ""));
  return data;
}

function actionButtons(job) {
  const cell = el("td");
  for (const action of ["retry", "cancel", "discard"]) {
    const b = el("button", {textContent: action, className: action});
    b.dataset.action = action;
    b.dataset.id = job.id;
    b.addEventListener("click", () => act(action, job.id));
    cell.append(b);
  }
  return cell;
}

async function act(action, id) {
  try {
    await api("POST", `/api/jobs/job/${id}/${action}`);
    selected = id;
    await refresh();
  } catch (e) {
    document.getElementById("status").textContent = `${action} failed: ${e.message}`;
  }
}

function renderQueues(queues) {
  const body = document.querySelector("#queues tbody");
  body.replaceChildren(...queues.map(q => {
    const row = el("tr", {}, el("td", {}, q.queue + (q.paused ? " (paused)" : "")));
    row.dataset.queue = q.queue;
    for (const s of states) row.append(el("td", {className: "num " + s}, (q.counts[s] || 0).toLocaleString()));
    row.append(el("td", {className: "num"}, q.completed_last_minute.toLocaleString()),
               el("td", {className: "num"}, q.failed_last_minute.toLocaleString()));
    const toggle = el("button", {textContent: q.paused ? "resume" : "pause"});
    toggle.addEventListener("click", async () => {
      await api("POST", `/api/jobs/queues/${encodeURIComponent(q.queue)}/${q.paused ? "resume" : "pause"}`);
      await refresh();
    });
    row.append(el("td", {}, toggle));
    return row;
  }));
}

function renderFailures(jobs) {
  const body = document.querySelector("#failures tbody");
  body.replaceChildren(...jobs.map(j => {
    const link = el("a", {textContent: "#" + j.id});
    link.addEventListener("click", () => { selected = j.id; refresh(); });
    const last = j.errors.length ? j.errors[j.errors.length - 1].error : "";
    const row = el("tr", {}, el("td", {}, link), el("td", {}, j.kind), el("td", {}, j.queue),
                   el("td", {className: "state " + j.state}, j.state), el("td", {}, `${j.attempt}/${j.max_attempts}`),
                   el("td", {className: "error"}, last), actionButtons(j));
    row.dataset.job = j.id;
    row.dataset.state = j.state;
    return row;
  }));
}

function renderDetail(job) {
  const box = document.getElementById("detail");
  if (!job) { box.replaceChildren(el("em", {}, "click a job id")); return; }
  const time = t => t === null ? "—" : new Date(t).toISOString();
  const fields = [["id", job.id], ["state", job.state], ["queue", job.queue], ["kind", job.kind],
                  ["args", JSON.stringify(job.args)], ["attempt", `${job.attempt} of ${job.max_attempts}`],
                  ["priority", job.priority], ["created", time(job.created_at)], ["run at", time(job.run_at)],
                  ["last attempt", time(job.attempted_at)], ["finished", time(job.finished_at)],
                  ["worker", job.worker_id || "—"], ["tags", job.tags.join(", ") || "—"],
                  ["depends on", job.depends_on.join(", ") || "—"]];
  const table = el("table");
  for (const [name, value] of fields) {
    const cell = el("td", {className: name === "state" ? "state " + job.state : ""}, value);
    cell.dataset.field = name;
    table.append(el("tr", {}, el("th", {}, name), cell));
  }
  const attempts = el("table", {}, el("tr", {}, el("th", {}, "attempt"), el("th", {}, "at"), el("th", {}, "error")));
  for (const e of job.errors) attempts.append(el("tr", {}, el("td", {}, e.attempt), el("td", {}, e.at), el("td", {className: "error"}, e.error)));
  const actions = el("p");
  actions.append(actionButtons(job));
  box.replaceChildren(table, el("h3", {}, "Failed attempts"), job.errors.length ? attempts : el("em", {}, "none"), actions);
}

// Depth (left scale) and completed per minute (right scale) against time, each line scaled
// to its own maximum; the axis below says how long ago.
function renderChart(samples) {
  const svg = document.getElementById("chart");
  svg.dataset.samples = samples.length;
  if (samples.length === 0) return;
  const last = samples[samples.length - 1];
  const first = samples[0].at;
  const span = Math.max(last.at - first, 1);
  const depth = samples.map(s => s.waiting + s.running);
  const done = samples.map(s => s.completed_last_minute);
  const scale = values => Math.max(1, ...values);
  const line = (values, max) => samples.map((s, k) =>
      (900 * (s.at - first) / span).toFixed(1) + "," + (170 - 160 * values[k] / max).toFixed(1)).join(" ");
  const depthMax = scale(depth), doneMax = scale(done);
  document.getElementById("depth-line").setAttribute("points", line(depth, depthMax));
  document.getElementById("throughput-line").setAttribute("points", line(done, doneMax));
  const grid = document.getElementById("chart-grid");
  grid.replaceChildren();
  for (const y of [10, 90, 170]) {
    const g = document.createElementNS("http://www.w3.org/2000/svg", "line");
    for (const [k, v] of [["x1", 0], ["x2", 900], ["y1", y], ["y2", y], ["stroke", "#eee"]]) g.setAttribute(k, v);
    grid.append(g);
  }
  document.getElementById("depth-now").textContent = (last.waiting + last.running).toLocaleString() +
      " (peak " + depthMax.toLocaleString() + ")";
  document.getElementById("throughput-now").textContent = last.completed_last_minute.toLocaleString() +
      " (peak " + doneMax.toLocaleString() + ")";
  const ago = ms => ms < 1500 ? "now" : ms < 90000 ? Math.round(ms / 1000) + " s ago" : Math.round(ms / 60000) + " min ago";
  document.getElementById("chart-axis").replaceChildren(
      ...[first, first + span / 2, last.at].map(t => el("span", {}, ago(last.at - t))));
}

async function refresh() {
  try {
    const [queues, failures] = await Promise.all([api("GET", "/api/jobs/queues"), api("GET", "/api/jobs/failures")]);
    renderQueues(queues.queues);
    renderFailures(failures.jobs);
    renderChart((await api("GET", "/api/jobs/history")).samples);
    renderDetail(selected === null ? null : await api("GET", `/api/jobs/job/${selected}`));
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "refresh failed: " + e.message;
  }
}

refresh();
setInterval(refresh, 1000);
</script>
</body></html>
)html";

}  // namespace keel::jobs_http::detail
