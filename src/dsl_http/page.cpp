// The /dsl page: one HTML document with inline CSS and JS, no external assets. It draws the
// access graph from /api/dsl/access (roles, the tables each may read, inheritance) as SVG, lists
// a role's effective grants when it is clicked, shows the database's own row-level security,
// and tries queries through /api/dsl/query. Values go into the page with textContent, never as
// HTML.
#include "page_html.hpp"

namespace keel::dsl_http::detail {

const char* const page_html = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keel access</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; color: #222; padding: 0 1rem; }
h1 { margin: 0 0 .2rem; } h2 { margin: 1.6rem 0 .4rem; font-size: 1.1rem; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .3rem .5rem; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
th { font-weight: 600; color: #555; }
code, pre, textarea { font: 12px ui-monospace, monospace; } pre { margin: 0; white-space: pre-wrap; background: #f6f6f6; padding: .5rem; }
#status, .note { color: #777; font-size: 12px; }
svg text { font: 12px system-ui, sans-serif; } svg .role rect { fill: #eef3fb; stroke: #1759b8; } svg .table rect { fill: #f3f7ee; stroke: #3d7a1f; }
svg .role.selected rect { fill: #1759b8; } svg .role.selected text { fill: #fff; } svg .role { cursor: pointer; }
svg path.edge { fill: none; stroke: #9ab; stroke-width: 1.4; } svg path.edge.filtered { stroke: #b76e00; } svg path.edge.inherited { stroke-dasharray: 4 3; }
svg path.edge.dim { opacity: .15; } svg path.relationship { fill: none; stroke: #3d7a1f; stroke-width: 1; opacity: .6; } svg path.inherits { fill: none; stroke: #1759b8; stroke-width: 1.2; stroke-dasharray: 2 3; }
.masked { color: #b76e00; } .yes { color: #176f2c; font-weight: 600; } .no { color: #a12; }
form { display: grid; grid-template-columns: 10rem 1fr; gap: .4rem .8rem; align-items: start; margin: .5rem 0; }
label { color: #555; font-size: 13px; padding-top: .25rem; } textarea { width: 100%; min-height: 5.5rem; } input, select, button { font: inherit; padding: .2rem .4rem; }
.bad { color: #a12; }
</style></head><body>
<h1>keel access</h1>
<div id="status">loading…</div>

<h2>Access graph</h2>
<p class="note">Catalog roles on the left, tables on the right; an edge is a grant (amber: rows filtered; dashed: inherited); green arcs join tables by foreign key. Click a role for its grants.</p>
<svg id="graph" width="100%" height="120" role="img" aria-label="roles and the tables they may read"></svg>

<h2 id="grants-title">Grants</h2>
<table id="grants"><thead><tr><th>table</th><th>columns</th><th>rows</th><th>condition</th><th>aggregates</th><th>from role</th></tr></thead>
<tbody><tr><td colspan="6"><em>click a role</em></td></tr></tbody></table>

<h2>In the database</h2>
<p class="note">Row-level security and column grants as Postgres holds them (the catalog can be emitted as such: <code>compiler::rls_script</code>): database roles on the left, an edge where a role may select columns or a policy names it (amber: RLS filters its rows).</p>
<svg id="database-graph" width="100%" height="40" role="img" aria-label="database roles and the tables they may read"></svg>
<table id="database"><thead><tr><th>table</th><th>RLS</th><th>policies</th><th>columns granted</th></tr></thead>
<tbody><tr><td colspan="4"><em>not read: the page was mounted without database schemas</em></td></tr></tbody></table>

<h2>Try a query as a role</h2>
<form id="try" onsubmit="return false">
<label for="role">role</label><select id="role"></select>
<label>session</label><div id="session"></div>
<label for="query">query</label><textarea id="query" spellcheck="false"></textarea>
<label for="arguments">$1, $2, …</label><input id="arguments" placeholder="values, comma separated">
<span></span><div><button id="run" type="button">Run</button></div>
</form>
<div id="result"></div>

<script>
"use strict";
let access = null;
let selected = null;
const svgNS = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function cell(row, text, cls) {
  const td = el("td", cls ? {class: cls} : {}, text);
  row.appendChild(td);
  return td;
}
// A role's grants, its ancestors' included (each once), with the role each came from.
function effective(role) {
  const roles = access.catalog.roles;
  const seen = new Set();
  const out = [];
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    const r = roles.find((x) => x.name === name);
    if (!r) return;
    for (const g of r.grants) out.push({...g, from: name});
    for (const parent of r.inherits || []) visit(parent);
  };
  visit(role);
  return out;
}
// Draws a graph model — roles on the left, tables on the right, an edge per access — into `svg`.
// model: {roles: [{name, label, inherits}], tables: [{name, label}], edges: [{role, table, classes,
// title}], relationships: [{from_table, from_column, to_table, to_column}]}.
function draw(svg, model, onRole) {
  svg.replaceChildren();
  const rowHeight = 34;
  const height = Math.max(model.roles.length, model.tables.length, 1) * rowHeight + 20;
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", "0 0 960 " + height);
  const roleY = new Map();
  const tableY = new Map();
  model.roles.forEach((r, i) => roleY.set(r.name, 14 + i * rowHeight));
  model.tables.forEach((t, i) => tableY.set(t.name, 14 + i * rowHeight));
  const edges = el("svg:g");
  svg.appendChild(edges);
  for (const e of model.edges) {
    if (!roleY.has(e.role) || !tableY.has(e.table)) continue;
    const y1 = roleY.get(e.role) + 11;
    const y2 = tableY.get(e.table) + 11;
    const path = el("svg:path", {class: ["edge", ...e.classes].join(" "),
                                 d: `M 210 ${y1} C 430 ${y1}, 480 ${y2}, 690 ${y2}`, "data-role": e.role, "data-table": e.table});
    path.appendChild(el("svg:title", {}, e.title));
    edges.appendChild(path);
  }
  for (const r of model.roles) {
    for (const parent of r.inherits || []) {
      if (!roleY.has(parent)) continue;
      const a = roleY.get(r.name) + 11;
      const b = roleY.get(parent) + 11;
      edges.appendChild(el("svg:path", {class: "inherits", d: `M 30 ${a} C 5 ${a}, 5 ${b}, 30 ${b}`,
                                        "data-child": r.name, "data-parent": parent}));
    }
  }
  // The join relationships (foreign keys) between tables, as arcs on the tables' right.
  for (const rel of model.relationships || []) {
    if (!tableY.has(rel.from_table) || !tableY.has(rel.to_table) || rel.from_table === rel.to_table) continue;
    const a = tableY.get(rel.from_table) + 11;
    const b = tableY.get(rel.to_table) + 11;
    const bend = 890 + Math.min(60, Math.abs(a - b) / 3);
    const arc = el("svg:path", {class: "relationship", d: `M 890 ${a} C ${bend} ${a}, ${bend} ${b}, 890 ${b}`,
                                "data-from": rel.from_table, "data-to": rel.to_table});
    arc.appendChild(el("svg:title", {}, `${rel.from_table}.${rel.from_column} → ${rel.to_table}.${rel.to_column}`));
    edges.appendChild(arc);
  }
  for (const r of model.roles) {
    const g = el("svg:g", {class: "role" + (r.selected ? " selected" : ""), "data-role": r.name,
                           transform: `translate(30, ${roleY.get(r.name)})`});
    g.appendChild(el("svg:rect", {width: 180, height: 22, rx: 4}));
    g.appendChild(el("svg:text", {x: 8, y: 15}, r.label));
    if (onRole) g.addEventListener("click", () => onRole(r.name));
    svg.appendChild(g);
  }
  for (const t of model.tables) {
    const g = el("svg:g", {class: "table", "data-table": t.name, transform: `translate(690, ${tableY.get(t.name)})`});
    g.appendChild(el("svg:rect", {width: 200, height: 22, rx: 4}));
    g.appendChild(el("svg:text", {x: 8, y: 15}, t.label));
    svg.appendChild(g);
  }
}
// The catalog's graph: its roles, their effective grants, inheritance, foreign keys.
function drawGraph() {
  const model = {roles: [], tables: [], edges: [], relationships: access.catalog.relationships};
  for (const r of access.catalog.roles) {
    model.roles.push({name: r.name, label: r.name + (r.max_rows ? ` (≤ ${r.max_rows} rows)` : ""),
                      inherits: r.inherits, selected: selected === r.name});
    for (const g of effective(r.name)) {
      const classes = [];
      if (g.row_filter) classes.push("filtered");
      if (g.from !== r.name) classes.push("inherited");
      if (selected && selected !== r.name) classes.push("dim");
      model.edges.push({role: r.name, table: g.table, classes,
                        title: `${r.name} → ${g.table}: ${g.columns.join(", ")}${g.row_filter ? " where " + g.row_filter : ""}`});
    }
  }
  for (const t of access.catalog.tables) model.tables.push({name: t.name, label: `${t.schema}.${t.name} (${t.columns.length})`});
  draw(document.getElementById("graph"), model, selectRole);
}
// The database's graph: each role with column privileges or a policy on a table, its predicates.
function drawDatabaseGraph() {
  const model = {roles: [], tables: [], edges: []};
  const roles = new Set();
  for (const t of access.database.tables) {
    model.tables.push({name: t.table, label: `${t.schema}.${t.table}` + (t.rls_enabled ? " (RLS)" : "")});
    const byRole = new Map();
    for (const [role, columns] of Object.entries(t.select_columns)) byRole.set(role, {columns, policies: []});
    for (const p of t.policies) {
      for (const role of p.roles) {
        if (!byRole.has(role)) byRole.set(role, {columns: [], policies: []});
        byRole.get(role).policies.push(p);
      }
    }
    for (const [role, access_] of byRole) {
      roles.add(role);
      const filtered = t.rls_enabled && access_.policies.some((p) => p.using !== "");
      const title = `${role} → ${t.schema}.${t.table}: ` + (access_.columns.length ? access_.columns.join(", ") : "no columns") +
        access_.policies.map((p) => `; policy ${p.name}: ${p.using || "every row"}`).join("");
      model.edges.push({role, table: t.table, classes: filtered ? ["filtered"] : [], title});
    }
  }
  for (const role of [...roles].sort()) model.roles.push({name: role, label: role});
  draw(document.getElementById("database-graph"), model, null);
}
function selectRole(name) {
  selected = name;
  document.getElementById("role").value = name;
  drawGraph();
  document.getElementById("grants-title").textContent = "Grants of " + name;
  const body = document.querySelector("#grants tbody");
  body.replaceChildren();
  const grants = effective(name);
  if (grants.length === 0) {
    const tr = el("tr");
    cell(tr, "no grants: this role sees nothing").colSpan = 6;
    body.appendChild(tr);
  }
  for (const g of grants) {
    const tr = el("tr", {"data-table": g.table, "data-from": g.from});
    cell(tr, g.table);
    const cols = cell(tr, "");
    cols.className = "columns";
    g.columns.forEach((c, i) => {
      if (i > 0) cols.appendChild(document.createTextNode(", "));
      const masked = g.masks && g.masks[c];
      cols.appendChild(el("span", masked ? {class: "masked", title: "shown as " + masked} : {}, c + (masked ? " (masked)" : "")));
    });
    cell(tr, g.row_filter || "every row", "filter");
    cell(tr, g.when || "always");
    cell(tr, g.aggregates ? "yes" : "no", g.aggregates ? "yes" : "no");
    cell(tr, g.from);
    body.appendChild(tr);
  }
}
function drawDatabase() {
  if (!access.database) return;
  drawDatabaseGraph();
  const body = document.querySelector("#database tbody");
  body.replaceChildren();
  for (const t of access.database.tables) {
    const tr = el("tr", {"data-table": t.table});
    cell(tr, t.schema + "." + t.table);
    cell(tr, t.rls_enabled ? (t.rls_forced ? "on (forced)" : "on") : "off", t.rls_enabled ? "yes" : "no");
    const policies = cell(tr, "");
    for (const p of t.policies) {
      policies.appendChild(el("div", {class: "policy", "data-policy": p.name},
                              `${p.name} (${p.command} to ${p.roles.join(", ")}): ${p.using || "no row predicate"}`));
    }
    if (t.policies.length === 0) policies.textContent = "none";
    const cols = cell(tr, "");
    for (const [role, names] of Object.entries(t.select_columns)) {
      cols.appendChild(el("div", {"data-grantee": role}, role + ": " + names.join(", ")));
    }
    body.appendChild(tr);
  }
}
function drawForm() {
  const select = document.getElementById("role");
  select.replaceChildren();
  for (const r of access.catalog.roles) select.appendChild(el("option", {value: r.name}, r.name));
  const session = document.getElementById("session");
  session.replaceChildren();
  for (const a of access.catalog.session) {
    const input = el("input", {id: "attr-" + a.name, "data-attribute": a.name,
                               placeholder: a.type + (a.array ? " list, comma separated" : "")});
    const wrap = el("div");
    wrap.appendChild(el("code", {}, "@" + a.name + " "));
    wrap.appendChild(input);
    session.appendChild(wrap);
  }
  if (access.catalog.tables.length) {
    document.getElementById("query").value = "from " + access.catalog.tables[0].name + " | take 5";
  }
  if (!access.can_try) {
    document.getElementById("run").disabled = true;
    document.getElementById("result").appendChild(el("p", {class: "note"}, "Trying queries is off: the page was mounted without a try_as hook."));
  }
}
async function run() {
  const result = document.getElementById("result");
  result.replaceChildren(el("p", {class: "note"}, "running…"));
  const session = {};
  for (const input of document.querySelectorAll("#session input")) {
    if (input.value !== "") session[input.dataset.attribute] = input.value;
  }
  const argText = document.getElementById("arguments").value.trim();
  const body = {role: document.getElementById("role").value, session,
                query: document.getElementById("query").value,
                arguments: argText === "" ? [] : argText.split(",").map((s) => s.trim())};
  const r = await fetch("/api/dsl/query", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const answer = await r.json();
  result.replaceChildren();
  if (!r.ok) {
    const box = el("div", {id: "result-error", "data-code": answer.code || ""});
    box.appendChild(el("p", {class: "bad"}, answer.message || answer.detail || answer.error));
    if (answer.rendered) box.appendChild(el("pre", {}, answer.rendered));
    if (answer.sql) box.appendChild(el("pre", {}, answer.sql));
    result.appendChild(box);
    return;
  }
  result.appendChild(el("h3", {}, "SQL"));
  result.appendChild(el("pre", {id: "result-sql"}, answer.sql));
  result.appendChild(el("p", {class: "note", id: "result-parameters"},
                        "parameters: " + (answer.parameters.length ? answer.parameters.map((p, i) => `$${i + 1} = ${p === null ? "NULL" : JSON.stringify(p)}`).join(", ") : "none")));
  const table = el("table", {id: "result-rows"});
  const head = el("tr");
  for (const c of answer.columns) head.appendChild(el("th", {title: c.type}, c.name));
  table.appendChild(el("thead")).appendChild(head);
  const tbody = el("tbody");
  for (const row of answer.rows) {
    const tr = el("tr");
    for (const v of row) cell(tr, v === null ? "NULL" : v);
    tbody.appendChild(tr);
  }
  table.appendChild(tbody);
  result.appendChild(table);
  result.appendChild(el("p", {class: "note", id: "result-count"},
                        answer.row_count + " row" + (answer.row_count === 1 ? "" : "s") + (answer.truncated ? " (first ones shown)" : "")));
}
async function load() {
  try {
    const r = await fetch("/api/dsl/access");
    if (!r.ok) throw new Error("/api/dsl/access: " + r.status);
    access = await r.json();
    drawGraph();
    drawDatabase();
    drawForm();
    if (access.catalog.roles.length) selectRole(access.catalog.roles[0].name);
    document.getElementById("status").textContent =
      `${access.catalog.roles.length} roles, ${access.catalog.tables.length} tables`;
  } catch (e) {
    document.getElementById("status").textContent = "could not load: " + e.message;
  }
}
document.getElementById("run").addEventListener("click", () => run().catch((e) => {
  document.getElementById("result").replaceChildren(el("p", {class: "bad"}, String(e)));
}));
load();
</script>
</body></html>
)html";

}  // namespace keel::dsl_http::detail
