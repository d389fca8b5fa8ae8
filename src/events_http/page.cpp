// The /events page: one HTML document with inline CSS and JS, no external assets. It polls the
// JSON API under /api/events every two seconds. Values go into the page with textContent,
// never as HTML.
#include "page_html.hpp"

namespace keel::events_http::detail {

const char* const page_html = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keel events</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
h1 { margin: 0 0 .2rem; } h2 { margin: 1.6rem 0 .4rem; font-size: 1.1rem; } h3 { margin: 1rem 0 .3rem; font-size: 1rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .5rem; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #555; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.behind { color: #b76e00; font-weight: 600; } .held { color: #a12; font-weight: 600; }
pre { margin: 0; font: 12px ui-monospace, monospace; white-space: pre-wrap; }
#status, .note { color: #777; font-size: 12px; } a { color: #1759b8; cursor: pointer; }
</style></head><body>
<h1>keel events</h1>
<div id="status">loading…</div>

<h2>Readers</h2>
<p class="note">Subscriptions and projections by checkpoint. Lag counts positions drawn since the checkpoint.</p>
<div id="horizon"></div>
<table id="readers"><thead><tr><th>name</th><th>position</th><th>lag (events)</th><th>checkpoint age</th></tr></thead>
<tbody></tbody></table>

<h2>Consumer groups</h2>
<p class="note">Members share a group's partitions; each partition (a hash of the stream name) has one owner under a lease.</p>
<div id="groups"><p class="note">no consumer groups yet</p></div>

<h2>Streams</h2>
<table id="streams"><thead><tr><th>stream</th><th>status</th><th>last version</th><th>updated</th></tr></thead>
<tbody></tbody></table>

<h2 id="events-title">Events</h2>
<table id="events"><thead><tr><th>version</th><th>type</th><th>position</th><th>recorded</th><th>data</th><th>metadata</th></tr></thead>
<tbody><tr><td colspan="6"><em>click a stream</em></td></tr></tbody></table>

<script>
"use strict";
let selected = null;
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function when(ms) { return new Date(ms).toLocaleString(); }
function seconds(s) {
  if (s < 1) return "under a second";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}
async function get(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function refreshReaders() {
  const d = await get("/api/events/readers");
  const h = d.horizon;
  const box = document.getElementById("horizon");
  box.textContent = h.events_waiting > 0
      ? h.events_waiting + " committed events wait behind a transaction open for " +
        seconds(h.oldest_transaction_seconds) + " (server process " + h.oldest_transaction_pid + ")"
      : "nothing waits behind the horizon";
  box.className = h.events_waiting > 0 ? "held" : "note";
  const body = document.querySelector("#readers tbody");
  body.replaceChildren();
  for (const r of d.readers) {
    const tr = document.createElement("tr");
    tr.dataset.reader = r.name;
    tr.dataset.lag = r.lag_events;
    cell(tr, r.name);
    cell(tr, r.position);
    cell(tr, r.lag_events.toLocaleString(), "num lag" + (r.lag_events > 0 ? " behind" : ""));
    cell(tr, seconds(r.checkpoint_age_seconds));
    body.appendChild(tr);
  }
}
async function refreshGroups() {
  const d = await get("/api/events/groups");
  const box = document.getElementById("groups");
  if (d.groups.length === 0) return;
  box.replaceChildren();
  for (const g of d.groups) {
    const section = document.createElement("section");
    section.dataset.group = g.name;
    const live = g.members.filter(m => m.heartbeat_age_seconds < 60).length;
    section.appendChild(document.createElement("h3")).textContent =
        g.name + " — " + g.partitions + " partitions, " + live + (live === 1 ? " member" : " members");
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th>partition</th><th>owner</th><th>lease</th><th>position</th><th>lag (events)</th></tr></thead>";
    const body = table.appendChild(document.createElement("tbody"));
    for (const p of g.partition_list) {
      const tr = document.createElement("tr");
      tr.dataset.partition = p.partition;
      tr.dataset.owner = p.owner;
      cell(tr, p.partition, "num");
      cell(tr, p.owner === "" ? "free" : p.owner, "owner");
      cell(tr, p.owner === "" ? "" : p.lease_seconds_left < 0 ? "ran out" : "for " + seconds(p.lease_seconds_left),
           p.owner !== "" && p.lease_seconds_left < 0 ? "held" : "");
      cell(tr, p.position);
      cell(tr, p.lag_events.toLocaleString(), "num" + (p.lag_events > 0 ? " behind" : ""));
      body.appendChild(tr);
    }
    section.appendChild(table);
    box.appendChild(section);
  }
}
async function refreshStreams() {
  const d = await get("/api/events/streams?limit=100");
  const body = document.querySelector("#streams tbody");
  body.replaceChildren();
  for (const s of d.streams) {
    const tr = document.createElement("tr");
    tr.dataset.stream = s.name;
    const a = document.createElement("a");
    a.textContent = s.name;
    a.addEventListener("click", () => { selected = s.name; refreshEvents(); });
    tr.appendChild(document.createElement("td")).appendChild(a);
    cell(tr, s.status);
    cell(tr, s.version.toLocaleString(), "num");
    cell(tr, when(s.updated_at));
    body.appendChild(tr);
  }
}
async function refreshEvents() {
  if (selected === null) return;
  const d = await get("/api/events/streams/" + encodeURIComponent(selected) + "?limit=200");
  document.getElementById("events-title").textContent = "Events of " + d.stream + " (" + d.status + ")";
  const body = document.querySelector("#events tbody");
  body.replaceChildren();
  for (const e of d.events) {
    const tr = document.createElement("tr");
    tr.dataset.version = e.version;
    cell(tr, e.version, "num");
    cell(tr, e.type, "type");
    cell(tr, e.position);
    cell(tr, when(e.recorded_at));
    tr.appendChild(document.createElement("td")).appendChild(document.createElement("pre")).textContent = JSON.stringify(e.data);
    tr.appendChild(document.createElement("td")).appendChild(document.createElement("pre")).textContent = JSON.stringify(e.metadata);
    body.appendChild(tr);
  }
}
async function refresh() {
  try {
    await Promise.all([refreshReaders(), refreshGroups(), refreshStreams(), refreshEvents()]);
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "could not load: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
)html";

}  // namespace keel::events_http::detail
