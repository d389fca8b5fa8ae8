// keel::sync's Yjs rooms driven by real Yjs clients (npm yjs + y-websocket in node,
// tests/sync/yjs_clients.cjs) against a keel::net server on a real Postgres: convergence of
// clients that drop and regain their connection, awareness removed when a socket drops,
// read-only and denied clients, malformed and oversized messages, and a room that survives a
// server restart (its tail compacted or not).
#include <keel/crdt/yjs.hpp>
#include <keel/sync.hpp>

#include "support/pg.hpp"
#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace {

namespace sync = keel::sync;

std::filesystem::path clients_dir() {
  if (const char* dir = std::getenv("KEEL_TEST_CLIENTS_DIR")) return dir;
  return KEEL_TEST_CLIENTS_DIR;
}

// Tokens in the `token` query parameter: w edits, r reads, anything else is denied.
sync::access by_token(std::string_view, const keel::net::request& upgrade) {
  const auto token = upgrade.query_param("token");
  if (token == "w") return sync::access::read_write;
  if (token == "r") return sync::access::read_only;
  return sync::access::denied;
}

// A keel server with the rooms mounted, on a port of its own, over one schema's tables.
struct sync_server {
  keel::pg::pool pool;
  // Messages up to 256 KiB, so that the oversized one is refused while it is all in flight.
  keel::net::server server{
      {.address = "127.0.0.1", .port = 0, .threads = 2, .websocket = {.max_message_bytes = 256 * 1024}}};
  std::shared_ptr<sync::rooms> rooms;

  explicit sync_server(const std::string& conninfo, std::size_t compact_after = 200)
      : pool({.conninfo = conninfo, .max_size = 4}) {
    rooms = sync::rooms::mount(server,
                               {.authorize = by_token, .pool = &pool, .compact_after_updates = compact_after})
                .value();
    REQUIRE(server.start());
  }
  ~sync_server() {
    server.stop();
    server.wait();
  }
  sync_server(const sync_server&) = delete;
  sync_server& operator=(const sync_server&) = delete;

  [[nodiscard]] std::string url() const {
    return "ws://127.0.0.1:" + std::to_string(server.port()) + "/sync";
  }
};

boost::json::object run_clients(const std::string& arguments) {
  const auto ran = keel::test::run_command("KEEL_TEST_CLIENTS_DIR='" + clients_dir().string() + "' node '" +
                                           KEEL_TEST_SOURCE_DIR "/sync/yjs_clients.cjs' " + arguments);
  INFO("yjs_clients.cjs " << arguments << " said:\n" << ran.output.substr(0, 3000));
  REQUIRE(ran.status == 0);
  const auto line = ran.output.rfind("\n{");
  const auto start = line == std::string::npos ? ran.output.find('{') : line + 1;
  REQUIRE(start != std::string::npos);
  return boost::json::parse(std::string_view(ran.output).substr(start)).as_object();
}

std::string text_of(const boost::json::object& o, const char* field) {
  return std::string(o.at(field).as_string());
}

}  // namespace

TEST_SUITE("node") {
  TEST_CASE(
      "three y-websocket clients edit one text, dropping and regaining their connection: they converge") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo, 50);
    for (int seed = 1; seed <= 3; ++seed) {
      CAPTURE(seed);
      const auto room = "converge-" + std::to_string(seed);
      const auto out = run_clients("converge '" + s.url() + "' " + room + " 3 " + std::to_string(seed));
      CHECK(out.at("equal").as_bool());
      CHECK(out.at("length").to_number<int>() > 20);
      CHECK(out.at("disconnects").to_number<int>() > 0);
      // What the server keeps is what the clients hold: a new client reads the same text.
      CHECK(text_of(run_clients("read '" + s.url() + "' " + room), "text") == text_of(out, "text"));
    }
    CHECK(s.rooms->stats().compactions > 0);
    CHECK(s.rooms->stats().messages_refused == 0);
  }

  TEST_CASE("a room survives a server restart: from its tail, and from its compacted document") {
    keel::test::scratch_schema schema;
    {
      sync_server first(schema.conninfo);
      CHECK(text_of(run_clients("write '" + first.url() + "' notes 'kept across restarts'"), "text") ==
            "kept across restarts");
    }
    {
      sync_server second(schema.conninfo);
      CHECK(text_of(run_clients("read '" + second.url() + "' notes"), "text") == "kept across restarts");
      CHECK(second.rooms->stats().rooms_loaded >= 1);
      CHECK(text_of(run_clients("write '" + second.url() + "' notes ', twice'"), "text") ==
            "kept across restarts, twice");
      REQUIRE(second.rooms->compact_now());
      auto c = schema.connect();
      CHECK(c.query("SELECT count(*) FROM keel_sync_updates").value()[0].get<std::int64_t>(0).value() == 0);
    }
    sync_server third(schema.conninfo);
    CHECK(text_of(run_clients("read '" + third.url() + "' notes"), "text") == "kept across restarts, twice");
    // The document, as one Yjs update, from the library too.
    const auto document = third.rooms->document("notes").value();
    CHECK(keel::crdt::yjs::decode_update(document).has_value());
  }

  TEST_CASE("awareness: a cursor reaches the others, and is removed for them when its socket drops") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("awareness '" + s.url() + "' cursors");
    CHECK(out.at("seen_ms").to_number<double>() >= 0);
    CHECK(out.at("b_states").to_number<int>() == 1);  // its own state only
  }

  TEST_CASE("access per room: read-only edits are dropped and the client told; a denied client is closed") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("read_only '" + s.url() + "' shared");
    CHECK(text_of(out, "probe") == "from the writer");
    CHECK(text_of(out, "told").find("read-only") != std::string::npos);
    CHECK(s.rooms->stats().updates_dropped_read_only >= 1);
    const auto denied = run_clients("denied '" + s.url() + "' secret");
    CHECK(denied.at("code").to_number<int>() == 1008);
    CHECK(denied.at("told").as_bool());
  }

  TEST_CASE("malformed and oversized messages close their sender with a clear code; the room goes on") {
    keel::test::scratch_schema schema;
    sync_server s(schema.conninfo);
    const auto out = run_clients("malformed '" + s.url() + "' sturdy");
    CHECK(out.at("bad_update").at("code").to_number<int>() == 1002);
    CHECK(std::string(out.at("bad_update").at("reason").as_string()) == "a Yjs update that does not decode");
    CHECK(out.at("truncated").at("code").to_number<int>() == 1002);
    CHECK(out.at("unknown_type").at("code").to_number<int>() == 1002);
    CHECK(out.at("text_frame").at("code").to_number<int>() == 1002);
    CHECK(out.at("oversized").at("code").to_number<int>() == 1009);
    CHECK(text_of(out, "text") == "before after");
  }
}
