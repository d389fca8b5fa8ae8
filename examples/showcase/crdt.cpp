// keel::crdt in the showcase: two replicas of a text, "alice" and "bob", edited apart and synced
// by deltas when you say so (as two offline editors would), with undo of each one's own edits;
// their documents are saved in Postgres after every change and loaded at start. And Yjs's
// update codec: updates merged, a state vector read, the structs listed — without a document.
#include <keel/core/bytes.hpp>
#include <keel/core/utf8.hpp>
#include <keel/crdt.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace showcase {
namespace {

namespace crdt = keel::crdt;
namespace net = keel::net;

constexpr std::size_t max_text_bytes = 100'000;
constexpr std::string_view replica_names[] = {"alice", "bob"};

// Two updates npm yjs 13.6.33 wrote: client 7 typing into Y.Text "t", a map entry and an
// array; then client 9 typing ">" in front (the page merges them).
constexpr std::string_view demo_updates[] = {
    "010907000601017404626f6c6404747275658407000168810701018407020af09f988020746865726586070a04626f6c64046e75"
    "6c"
    "6c2101016d016b01a8070c01770374776f0301016102010288070e027c40600000760101787502787e01070202010c01",
    "01010900440700013e01070202010c01"};

struct crdt_part {
  std::mutex lock;  // handlers run on the server's threads; a text is for one thread at a time
  std::map<std::string, crdt::text, std::less<>> replicas;
  keel::pg::pool* pool = nullptr;

  // Saves a replica's document (after each change): what the next start loads.
  keel::result<void> persist(const std::string& name) {
    auto c = pool->acquire();
    if (!c) return c.error();
    const auto saved = replicas.at(name).save();
    auto done = (*c)->query(
        "INSERT INTO showcase_crdt (replica, document) VALUES ($1, $2) "
        "ON CONFLICT (replica) DO UPDATE SET document = EXCLUDED.document",
        name, keel::bytes_view(saved));
    if (!done) return done.error();
    return {};
  }

  boost::json::object state() {
    boost::json::object out;
    for (auto& [name, doc] : replicas) {
      boost::json::object version;
      for (const auto& [replica, clock] : doc.version()) version[std::to_string(replica)] = clock;
      out[name] = {{"text", doc.str()},
                   {"characters", doc.size()},
                   {"items", doc.item_count()},
                   {"version", version},
                   {"can_undo", doc.can_undo()},
                   {"can_redo", doc.can_redo()},
                   {"saved_bytes", doc.save().size()}};
    }
    return out;
  }
};

// Code points of valid UTF-8 (the page sends what its textarea holds).
std::u32string code_points(std::string_view utf8) {
  std::u32string out;
  while (!utf8.empty()) {
    const auto length = keel::utf8_sequence_length(utf8);
    out.push_back(keel::utf8_code_point(utf8, length));
    utf8.remove_prefix(length);
  }
  return out;
}

// Turns `doc`'s text into `wanted` as an editor binding does: one erase and one insert between
// the common start and end, one undo step.
keel::result<void> edit_to(crdt::text& doc, std::string_view wanted) {
  if (!keel::valid_utf8(wanted)) return crdt::errc::invalid_utf8;
  const auto before = code_points(doc.str());
  const auto after = code_points(wanted);
  std::size_t start = 0;
  while (start < before.size() && start < after.size() && before[start] == after[start]) ++start;
  std::size_t end = 0;
  while (end < before.size() - start && end < after.size() - start &&
         before[before.size() - 1 - end] == after[after.size() - 1 - end])
    ++end;
  std::string inserted;
  for (std::size_t k = start; k < after.size() - end; ++k) keel::append_utf8(inserted, after[k]);
  doc.begin_undo_group();
  auto erased = doc.erase(start, before.size() - end - start);
  auto typed = erased ? doc.insert(start, inserted) : keel::result<void>(erased.error());
  doc.end_undo_group();
  return typed;
}

std::optional<std::string> replica_of(const boost::json::object* body, const char* field) {
  const auto* v = body != nullptr ? body->if_contains(field) : nullptr;
  if (v == nullptr || !v->is_string()) return std::nullopt;
  const std::string name(v->as_string());
  for (const auto known : replica_names) {
    if (name == known) return name;
  }
  return std::nullopt;
}

net::response bad_request(std::string_view hint) {
  return net::error_response(net::status::bad_request, "invalid request", std::string(hint));
}

constexpr std::string_view crdt_body = R"html(
<h1>Text CRDT</h1>
<p class="note">Two replicas of one text, <b>alice</b> and <b>bob</b>, edited apart as two offline editors
would be (keel::crdt::text, Yjs's YATA ordering). Send one's changes to the other as a delta since its
version, in either direction, whenever you like: both end with the same text. Undo takes back only the
replica's own edits. Each document is saved in Postgres after every change.</p>
<div class="replicas">
<section><h2>alice</h2><textarea id="alice" rows="6" cols="48"></textarea>
<p><button data-undo="alice">undo</button> <button data-redo="alice">redo</button>
<button data-sync="alice" data-to="bob">send alice → bob</button></p><p class="note" id="alice-state"></p></section>
<section><h2>bob</h2><textarea id="bob" rows="6" cols="48"></textarea>
<p><button data-undo="bob">undo</button> <button data-redo="bob">redo</button>
<button data-sync="bob" data-to="alice">send bob → alice</button></p><p class="note" id="bob-state"></p></section>
</div>
<p id="delta" class="note"></p>
<h2>Yjs updates, without a document</h2>
<p class="note">keel::crdt::yjs merges updates from Yjs editors (ProseMirror, CodeMirror, Quill…), reads a
state vector from one and lists its structs — byte for byte what Yjs's own functions give.</p>
<p><button id="yjs-merge">merge the two updates below</button> <span id="yjs-summary"></span></p>
<pre id="yjs-input"></pre>
<table id="yjs-structs"><thead><tr><th>struct</th><th>client</th><th>clock</th><th>length</th><th>content</th></tr></thead><tbody></tbody></table>
)html";

constexpr std::string_view crdt_script = R"js(
const names = ["alice", "bob"];
function show(state) {
  for (const name of names) {
    const area = document.getElementById(name);
    const s = state[name];
    if (document.activeElement !== area) area.value = s.text;
    area.dataset.text = s.text;
    document.getElementById(name + "-state").textContent = s.characters + " characters, " + s.items +
      " items, version " + JSON.stringify(s.version) + ", saved " + s.saved_bytes + " bytes";
    document.querySelector('[data-undo="' + name + '"]').disabled = !s.can_undo;
    document.querySelector('[data-redo="' + name + '"]').disabled = !s.can_redo;
  }
  document.body.dataset.ready = "1";
}
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  const d = await r.json();
  if (!r.ok) { document.getElementById("delta").textContent = d.error + ": " + (d.detail || ""); return null; }
  return d;
}
for (const name of names) {
  document.getElementById(name).addEventListener("input", async (e) => {
    const d = await post("/api/crdt/edit", {replica: name, text: e.target.value});
    if (d) show(d.state);
  });
}
document.querySelectorAll("[data-sync]").forEach(b => b.addEventListener("click", async () => {
  const d = await post("/api/crdt/sync", {from: b.dataset.sync, to: b.dataset.to});
  if (!d) return;
  const note = document.getElementById("delta");
  note.textContent = "delta " + b.dataset.sync + " → " + b.dataset.to + ": " + d.delta_bytes + " bytes";
  note.dataset.bytes = d.delta_bytes;
  show(d.state);
}));
document.querySelectorAll("[data-undo],[data-redo]").forEach(b => b.addEventListener("click", async () => {
  const undo = b.dataset.undo !== undefined;
  const d = await post(undo ? "/api/crdt/undo" : "/api/crdt/redo", {replica: undo ? b.dataset.undo : b.dataset.redo});
  if (d) show(d.state);
}));
let demoUpdates = [];
document.getElementById("yjs-merge").addEventListener("click", async () => {
  const d = await post("/api/crdt/yjs/merge", {updates: demoUpdates});
  if (!d) return;
  const summary = document.getElementById("yjs-summary");
  summary.textContent = d.merged.length / 2 + "-byte merged update; state vector " + JSON.stringify(d.state_vector);
  summary.dataset.structs = d.structs.length;
  const body = document.querySelector("#yjs-structs tbody");
  body.replaceChildren();
  for (const s of d.structs) {
    const tr = body.appendChild(document.createElement("tr"));
    for (const v of [s.kind, s.client, s.clock, s.length, s.content]) tr.appendChild(document.createElement("td")).textContent = v;
  }
});
(async () => {
  const d = await (await fetch("/api/crdt")).json();
  demoUpdates = d.demo_updates;
  document.getElementById("yjs-input").textContent = demoUpdates.join("\n");
  show(d.state);
})();
)js";

const char* content_name(const crdt::yjs::block& b) {
  using crdt::yjs::content_kind;
  if (b.kind == crdt::yjs::struct_kind::gc) return "";
  if (b.kind == crdt::yjs::struct_kind::skip) return "";
  switch (b.content.kind) {
    case content_kind::deleted:
      return "deleted";
    case content_kind::json:
      return "json";
    case content_kind::binary:
      return "binary";
    case content_kind::string:
      return "string";
    case content_kind::embed:
      return "embed";
    case content_kind::format:
      return "format";
    case content_kind::type:
      return "type";
    case content_kind::any:
      return "any";
    case content_kind::doc:
      return "doc";
  }
  return "";
}

}  // namespace

keel::result<void> mount_crdt(context& ctx) {
  auto part = std::make_shared<crdt_part>();
  part->pool = &ctx.pool;
  {
    auto c = ctx.pool.acquire();
    if (!c) return c.error();
    if (auto made = (*c)->execute(
            "CREATE TABLE IF NOT EXISTS showcase_crdt (replica text PRIMARY KEY, document bytea NOT NULL)");
        !made)
      return made.error();
    auto rows = (*c)->query("SELECT replica, document FROM showcase_crdt");
    if (!rows) return rows.error();
    for (const auto& row : *rows) {
      auto [name, document] = row.as<std::string, keel::bytes>().value();
      auto loaded = crdt::text::load(document, name == "alice" ? 1 : 2);
      if (!loaded) return loaded.error();
      part->replicas.emplace(name, std::move(*loaded));
    }
  }
  if (part->replicas.size() != 2) {
    // First start: alice writes a line, bob has it.
    part->replicas.clear();
    part->replicas.emplace("alice", crdt::text(1));
    part->replicas.emplace("bob", crdt::text(2));
    auto& alice = part->replicas.at("alice");
    if (auto typed = alice.insert(0, "Shopping: milk, eggs"); !typed) return typed;
    if (auto synced = part->replicas.at("bob").apply(alice.delta_since({})); !synced) return synced;
    for (const auto name : replica_names) {
      if (auto saved = part->persist(std::string(name)); !saved) return saved;
    }
  }

  ctx.server.get("/api/crdt", [part](const net::request&) {
    const std::lock_guard guard(part->lock);
    boost::json::array updates;
    for (const auto u : demo_updates) updates.emplace_back(u);
    return net::json_response(boost::json::object{{"state", part->state()}, {"demo_updates", updates}});
  });
  ctx.server.post(
      "/api/crdt/edit", net::json_handler([part](const net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        const auto name = replica_of(o, "replica");
        const auto* text = o != nullptr ? o->if_contains("text") : nullptr;
        if (!name || text == nullptr || !text->is_string() || text->as_string().size() > max_text_bytes)
          return bad_request(R"(send {"replica": "alice" or "bob", "text": "the whole new text"})");
        const std::lock_guard guard(part->lock);
        if (auto edited = edit_to(part->replicas.at(*name), std::string_view(text->as_string())); !edited)
          return net::error_response(net::status::bad_request, edited.error());
        if (auto saved = part->persist(*name); !saved)
          return net::error_response(net::status::internal_server_error, saved.error());
        return net::json_response(boost::json::object{{"state", part->state()}});
      }));
  ctx.server.post("/api/crdt/sync",
                  net::json_handler([part](const net::request&, const boost::json::value& body) {
                    const auto* o = body.if_object();
                    const auto from = replica_of(o, "from");
                    const auto to = replica_of(o, "to");
                    if (!from || !to || *from == *to)
                      return bad_request(R"(send {"from": "alice", "to": "bob"} (or the other way))");
                    const std::lock_guard guard(part->lock);
                    auto& receiver = part->replicas.at(*to);
                    const auto delta = part->replicas.at(*from).delta_since(receiver.version());
                    if (auto applied = receiver.apply(delta); !applied)
                      return net::error_response(net::status::internal_server_error, applied.error());
                    if (auto saved = part->persist(*to); !saved)
                      return net::error_response(net::status::internal_server_error, saved.error());
                    return net::json_response(
                        boost::json::object{{"delta_bytes", delta.size()}, {"state", part->state()}});
                  }));
  for (const bool undo : {true, false}) {
    ctx.server.post(
        undo ? "/api/crdt/undo" : "/api/crdt/redo",
        net::json_handler([part, undo](const net::request&, const boost::json::value& body) {
          const auto name = replica_of(body.if_object(), "replica");
          if (!name) return bad_request(R"(send {"replica": "alice" or "bob"})");
          const std::lock_guard guard(part->lock);
          auto& doc = part->replicas.at(*name);
          const bool done = undo ? doc.undo() : doc.redo();
          if (auto saved = part->persist(*name); !saved)
            return net::error_response(net::status::internal_server_error, saved.error());
          return net::json_response(boost::json::object{{"done", done}, {"state", part->state()}});
        }));
  }
  ctx.server.post(
      "/api/crdt/yjs/merge", net::json_handler([](const net::request&, const boost::json::value& body) {
        const auto* o = body.if_object();
        const auto* list = o != nullptr ? o->if_contains("updates") : nullptr;
        if (list == nullptr || !list->is_array() || list->as_array().size() > 64)
          return bad_request(R"(send {"updates": ["<hex of a Yjs update>", ...]} (at most 64))");
        std::vector<keel::bytes> updates;
        for (const auto& u : list->as_array()) {
          auto raw = u.is_string() ? keel::from_hex(std::string_view(u.as_string()))
                                   : keel::result<keel::bytes>(keel::errc::hex_odd_length);
          if (!raw) return bad_request("each update is a string of hex digits");
          updates.push_back(std::move(*raw));
        }
        auto merged = crdt::yjs::merge_updates(updates);
        if (!merged) return net::error_response(net::status::bad_request, merged.error());
        const auto sv =
            crdt::yjs::decode_state_vector(crdt::yjs::state_vector_from_update(*merged).value()).value();
        boost::json::object state_vector;
        for (const auto& [client, clock] : sv) state_vector[std::to_string(client)] = clock;
        boost::json::array structs;
        for (const auto& b : crdt::yjs::decode_update(*merged).value().blocks) {
          const char* kind = b.kind == crdt::yjs::struct_kind::item ? "item"
                             : b.kind == crdt::yjs::struct_kind::gc ? "gc"
                                                                    : "skip";
          structs.push_back({{"kind", kind},
                             {"client", b.start.client},
                             {"clock", b.start.clock},
                             {"length", b.length},
                             {"content", content_name(b)}});
        }
        return net::json_response(boost::json::object{
            {"merged", keel::to_hex(*merged)}, {"state_vector", state_vector}, {"structs", structs}});
      }));
  ctx.server.get("/crdt", [html = page("text CRDT", crdt_body, crdt_script)](const net::request&) {
    return net::text_response(html, net::status::ok, "text/html; charset=utf-8");
  });
  ctx.endpoints.push_back({"GET", "/crdt", "the text CRDT page: two replicas edited apart, synced, undone"});
  ctx.endpoints.push_back({"GET", "/api/crdt", "both replicas: text, version, undo state"});
  ctx.endpoints.push_back({"POST", "/api/crdt/edit", "sets a replica's text (an erase and an insert)"});
  ctx.endpoints.push_back({"POST", "/api/crdt/sync", "sends one replica's delta to the other"});
  ctx.endpoints.push_back(
      {"POST", "/api/crdt/undo", "undoes a replica's last own edit (/redo: brings it back)"});
  ctx.endpoints.push_back(
      {"POST", "/api/crdt/yjs/merge", "merges Yjs updates (hex); the structs and state vector"});
  return {};
}

}  // namespace showcase
