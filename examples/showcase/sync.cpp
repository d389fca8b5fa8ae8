// keel::sync in the showcase: Yjs rooms at ws://<host>/sync/<room> on the showcase's Postgres, and
// a collaborative text page (/sync) where everyone who opens the same room types into one
// document and sees the others' cursors. The page runs npm's yjs and y-websocket, unmodified,
// served from the packages `./keel demo` installs (examples/showcase/web/package.json): every
// JavaScript file of them is read into memory at start, and an import map, made from each
// package's "exports", lets the browser resolve their bare imports ('yjs', 'lib0/encoding').
#include <keel/sync.hpp>

#include "showcase.hpp"

#include <boost/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

namespace showcase {
namespace {

namespace net = keel::net;
namespace fs = std::filesystem;

// The packages the page loads, with what they import (y-websocket needs the rest).
constexpr std::string_view web_packages[] = {"yjs", "y-websocket", "y-protocols", "lib0", "isomorphic.js"};
// What an export resolves to in a browser, in order of preference.
constexpr std::string_view browser_conditions[] = {"browser", "module", "import", "default"};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// An export's target for a browser: a string, or the first condition that leads to one.
std::string resolve_export(const boost::json::value& target) {
  if (target.is_string()) return std::string(target.as_string());
  if (!target.is_object()) return {};
  for (const auto condition : browser_conditions) {
    if (const auto* next = target.as_object().if_contains(condition)) {
      if (auto found = resolve_export(*next); !found.empty()) return found;
    }
  }
  return {};
}

// The packages' files (by URL path under /vendor/) and the import map naming them.
struct web_files {
  std::map<std::string, std::string, std::less<>> files;
  boost::json::object imports;
  std::string missing;  // why the page cannot run, when it cannot
};

web_files load_web_packages(const fs::path& node_modules) {
  web_files out;
  for (const auto package : web_packages) {
    const auto root = node_modules / package;
    std::error_code ec;
    if (!fs::is_regular_file(root / "package.json", ec)) {
      out.missing = "the npm package " + std::string(package) + " is not under " + node_modules.string() +
                    ": run ./keel demo, which installs examples/showcase/web's packages";
      return out;
    }
    for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      const auto relative = it->path().lexically_relative(root).generic_string();
      if (it->is_directory() && (relative == "node_modules" || relative == "tests" || relative == "test")) {
        it.disable_recursion_pending();
        continue;
      }
      const auto extension = it->path().extension();
      if (!it->is_regular_file() || (extension != ".js" && extension != ".mjs")) continue;
      out.files.emplace("/vendor/" + std::string(package) + "/" + relative, read_file(it->path()));
    }
    boost::system::error_code parse_error;
    const auto manifest = boost::json::parse(read_file(root / "package.json"), parse_error);
    const auto* exports = manifest.is_object() ? manifest.as_object().if_contains("exports") : nullptr;
    if (exports == nullptr || !exports->is_object()) continue;
    for (const auto& [key, target] : exports->as_object()) {
      const std::string_view subpath = key;
      if (!subpath.starts_with(".") || subpath.ends_with(".cjs") ||
          subpath.find('*') != std::string_view::npos)
        continue;
      const auto file = resolve_export(target);
      if (!file.starts_with("./")) continue;
      auto url = "/vendor/" + std::string(package) + "/" + file.substr(2);
      if (!out.files.contains(url)) continue;  // e.g. a types-only or CommonJS target
      out.imports[std::string(package) + std::string(subpath.substr(1))] = std::move(url);
    }
  }
  return out;
}

constexpr std::string_view sync_body = R"html(
<h1>Collaborative text <span class="note">keel::sync</span></h1>
<p class="note">Everyone who opens this page with the same room types into one Yjs document, kept in
Postgres by keel::sync's rooms (ws://&lt;host&gt;/sync/&lt;room&gt;). The page runs npm's yjs and
y-websocket as they are; open it in a second window to see the other's text and cursor.</p>
<p>room <b id="room"></b> · you are <b id="me"></b> · <span id="status" class="note">connecting</span></p>
<textarea id="editor" rows="10" cols="80" spellcheck="false" disabled></textarea>
<h2>Who is here</h2>
<ul id="peers"></ul>
<h2>The text with everyone's cursor</h2>
<pre id="view" class="note"></pre>
)html";

// The page's module: Y.Text bound to the textarea (an edit becomes the smallest delete and
// insert that turns the old value into the new one), the local selection kept as Yjs relative
// positions so that it stays put when others type, and cursors shared through awareness.
constexpr std::string_view sync_module = R"js(
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

const params = new URLSearchParams(location.search);
const room = params.get('room') || 'showcase';
const me = params.get('name') || 'guest-' + Math.floor(Math.random() * 1000);
const colors = ['#d33', '#36c', '#2a2', '#c6c', '#c80', '#088'];
const color = colors[Math.floor(Math.random() * colors.length)];
document.getElementById('room').textContent = room;
document.getElementById('me').textContent = me;

const doc = new Y.Doc();
const text = doc.getText('text');
const provider = new WebsocketProvider((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/sync', room, doc);
const editor = document.getElementById('editor');
const status = document.getElementById('status');
provider.on('status', (e) => { status.textContent = e.status; });
provider.on('sync', (synced) => {
  if (!synced) return;
  editor.disabled = false;
  editor.value = text.toString();
  document.body.dataset.synced = '1';
});
provider.awareness.setLocalStateField('user', { name: me, color });

let anchor = null, head = null;  // the selection, as relative positions
function keepSelection() {
  anchor = Y.createRelativePositionFromTypeIndex(text, editor.selectionStart);
  head = Y.createRelativePositionFromTypeIndex(text, editor.selectionEnd);
  provider.awareness.setLocalStateField('cursor', {
    anchor: Y.relativePositionToJSON(anchor), head: Y.relativePositionToJSON(head) });
}
for (const event of ['select', 'keyup', 'mouseup', 'focus']) editor.addEventListener(event, keepSelection);

editor.addEventListener('input', () => {
  const before = text.toString(), after = editor.value;
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  let endBefore = before.length, endAfter = after.length;
  while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) { endBefore--; endAfter--; }
  doc.transact(() => {
    if (endBefore > start) text.delete(start, endBefore - start);
    if (endAfter > start) text.insert(start, after.slice(start, endAfter));
  }, 'editor');
  keepSelection();
});

text.observe((event) => {
  if (event.transaction.origin === 'editor') return render();
  editor.value = text.toString();
  if (anchor && head && document.activeElement === editor) {
    const a = Y.createAbsolutePositionFromRelativePosition(anchor, doc);
    const h = Y.createAbsolutePositionFromRelativePosition(head, doc);
    if (a && h) editor.setSelectionRange(a.index, h.index);
  }
  render();
});

// Others' cursors: a list, and carets in a copy of the text.
function render() {
  const peers = document.getElementById('peers');
  const carets = [];
  peers.replaceChildren();
  provider.awareness.getStates().forEach((state, client) => {
    if (client === doc.clientID || !state.user) return;
    const li = document.createElement('li');
    li.dataset.peer = state.user.name;
    li.style.color = state.user.color;
    let where = 'no cursor yet';
    if (state.cursor) {
      const at = Y.createAbsolutePositionFromRelativePosition(Y.createRelativePositionFromJSON(state.cursor.head), doc);
      if (at) {
        li.dataset.index = String(at.index);
        where = 'at ' + at.index;
        carets.push({ index: at.index, name: state.user.name, color: state.user.color });
      }
    }
    li.textContent = state.user.name + ' — ' + where;
    peers.append(li);
  });
  const view = document.getElementById('view');
  view.replaceChildren();
  const value = text.toString();
  let from = 0;
  for (const c of carets.sort((x, y) => x.index - y.index)) {
    view.append(value.slice(from, c.index));
    const mark = document.createElement('span');
    mark.textContent = '|' + c.name;
    mark.style.color = c.color;
    view.append(mark);
    from = c.index;
  }
  view.append(value.slice(from));
}
provider.awareness.on('change', render);
window.keelSync = { doc, text, provider };
)js";

}  // namespace

keel::result<void> mount_sync(context& ctx) {
  // Kept for the server's life: the rooms stop their threads when destroyed.
  static std::shared_ptr<keel::sync::rooms> yjs_rooms;
  auto mounted = keel::sync::rooms::mount(ctx.server, {.pool = &ctx.pool});
  if (!mounted) return mounted.error();
  yjs_rooms = std::move(*mounted);

  const char* web_dir = std::getenv("KEEL_SHOWCASE_WEB_DIR");
  auto web = std::make_shared<const web_files>(load_web_packages(
      fs::path(web_dir != nullptr && *web_dir != '\0' ? web_dir : KEEL_SHOWCASE_WEB_DIR) / "node_modules"));
  ctx.server.get("/vendor/{path...}", [web](const net::request& req) {
    const auto found = web->files.find("/vendor/" + std::string(req.path_param("path").value_or("")));
    if (found == web->files.end())
      return net::error_response(net::status::not_found, "not one of the page's npm files");
    return net::text_response(found->second, net::status::ok, "text/javascript; charset=utf-8");
  });
  std::string body(sync_body);
  if (web->missing.empty()) {
    body += "<script type=\"importmap\">" +
            boost::json::serialize(boost::json::object{{"imports", web->imports}}) +
            "</script>\n<script type=\"module\">" + std::string(sync_module) + "</script>";
  } else {
    body += "<p class=\"note\" id=\"missing\"></p>";
  }
  const auto missing_script = web->missing.empty()
                                  ? std::string()
                                  : "document.getElementById('missing').textContent = " +
                                        boost::json::serialize(boost::json::string(web->missing)) + ";";
  ctx.server.get("/sync", [html = page("collaborative text", body, missing_script)](const net::request&) {
    return net::text_response(html, net::status::ok, "text/html; charset=utf-8");
  });
  ctx.endpoints.push_back(
      {"WS", "/sync/{room}", "Yjs rooms (keel::sync): new WebsocketProvider('ws://<host>/sync', room, doc)"});
  ctx.endpoints.push_back({"GET", "/sync", "a collaborative text: Yjs in the browser, keel::sync's rooms"});
  return {};
}

}  // namespace showcase
