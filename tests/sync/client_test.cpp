// keel::sync's C++ client: keel::crdt documents shared between "services" (clients in this
// process) through Yjs rooms on a real Postgres — concurrent edits converging, a late joiner,
// edits made while the server was down, rooms served by two servers, the generic document
// types, refusal and an unreachable server.
#include <keel/crdt.hpp>
#include <keel/sync.hpp>

#include "support/pg.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <string>

namespace {

namespace sync = keel::sync;
namespace crdt = keel::crdt;
using namespace std::chrono_literals;

// A server with the rooms mounted on `conninfo`'s tables, on `port` (0: a free one).
struct rooms_server {
  keel::pg::pool pool;
  std::optional<keel::net::server> server;
  std::shared_ptr<sync::rooms> rooms;

  explicit rooms_server(const std::string& conninfo, std::uint16_t port = 0,
                        sync::authorize_function authorize = {})
      : pool({.conninfo = conninfo, .max_size = 4}) {
    server.emplace(keel::net::server_options{.address = "127.0.0.1", .port = port, .threads = 2});
    rooms = sync::rooms::mount(*server, {.authorize = std::move(authorize), .pool = &pool}).value();
    REQUIRE(server->start());
  }
  ~rooms_server() {
    server->stop();
    server->wait();
  }
  rooms_server(const rooms_server&) = delete;
  rooms_server& operator=(const rooms_server&) = delete;

  [[nodiscard]] sync::client_options room(std::string name) const {
    return {.port = server->port(),
            .room = std::move(name),
            .min_reconnect_delay = 20ms,
            .max_reconnect_delay = 200ms};
  }
};

using shared_text = sync::shared_document<crdt::text>;

std::string text_of(shared_text& doc) {
  return doc.read([](const crdt::text& t) { return t.str(); });
}

bool shows(shared_text& doc, const std::string& expected) {
  return doc.wait_until([&](const crdt::text& t) { return t.str() == expected; }, 20s);
}

}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("two C++ services share a keel text through a room: edits cross, concurrent ones converge") {
    keel::test::scratch_schema schema;
    rooms_server s(schema.conninfo);
    auto a = shared_text::open(s.room("notes"), crdt::text(1)).value();
    auto b = shared_text::open(s.room("notes"), crdt::text(2)).value();
    REQUIRE(a->edit([](crdt::text& t) { t.insert(0, "hello").value(); }));
    CHECK(shows(*b, "hello"));
    // Concurrent edits from a seeded schedule, with no waiting between them.
    std::mt19937 random(7);
    for (int step = 0; step < 200; ++step) {
      auto& doc = random() % 2 == 0 ? *a : *b;
      REQUIRE(doc.edit([&](crdt::text& t) {
        if (t.size() > 0 && random() % 3 == 0) {
          t.erase(random() % t.size(), 1).value();
        } else {
          t.insert(random() % (t.size() + 1), random() % 2 == 0 ? "x" : "ü").value();
        }
      }));
    }
    // Converged: the same version (every edit of both) and so the same text. Each wait wakes on
    // its own document's changes; the other's are checked between them.
    const auto version_of = [](shared_text& doc) {
      return doc.read([](const crdt::text& t) { return t.version(); });
    };
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (version_of(*a) != version_of(*b) && std::chrono::steady_clock::now() < deadline)
      (void)a->wait_until([&](const crdt::text& t) { return t.version() == version_of(*b); }, 50ms);
    REQUIRE(version_of(*a) == version_of(*b));
    const auto final_a = [&] { return text_of(*a); };
    CHECK(shows(*b, final_a()));
    // Updates that arrived while an INSERT was in flight were appended together.
    const auto stats = s.rooms->stats();
    CHECK(stats.updates_received >= 201 + 2);  // every edit, each replica's opening state (and sync replies)
    CHECK(stats.append_statements < stats.updates_received);
    CHECK(a->refused_deltas() == 0);
    CHECK(b->refused_deltas() == 0);
    // A third service joining later gets the whole text from the room.
    auto c = shared_text::open(s.room("notes"), crdt::text(3)).value();
    CHECK(shows(*c, final_a()));
  }

  TEST_CASE("edits made while the server is down reach the others when it is back; the room is in Postgres") {
    keel::test::scratch_schema schema;
    std::uint16_t port = 0;
    std::unique_ptr<shared_text> a, b;
    auto first = std::make_unique<rooms_server>(schema.conninfo);
    port = first->server->port();
    a = shared_text::open(first->room("offline"), crdt::text(1)).value();
    b = shared_text::open(first->room("offline"), crdt::text(2)).value();
    REQUIRE(a->edit([](crdt::text& t) { t.insert(0, "before").value(); }));
    REQUIRE(shows(*b, "before"));
    first.reset();  // the server goes away
    REQUIRE(a->edit([](crdt::text& t) { t.insert(t.size(), ", while down").value(); }));
    CHECK_FALSE(a->client().connected());
    rooms_server second(schema.conninfo, port);  // back, on the same port, from Postgres
    CHECK(shows(*b, "before, while down"));
    CHECK(a->client().reconnects() >= 1);
    auto c = shared_text::open(second.room("offline"), crdt::text(3)).value();
    CHECK(shows(*c, "before, while down"));
  }

  TEST_CASE("services on two servers of one database share a document; keel's other types travel too") {
    keel::test::scratch_schema schema;
    rooms_server one(schema.conninfo);
    rooms_server two(schema.conninfo);
    auto a = sync::shared_document<crdt::or_set>::open(one.room("basket"), crdt::or_set(1)).value();
    auto b = sync::shared_document<crdt::or_set>::open(two.room("basket"), crdt::or_set(2)).value();
    REQUIRE(a->edit([](crdt::or_set& s) { s.add("milk"); }));
    REQUIRE(b->edit([](crdt::or_set& s) { s.add("eggs"); }));
    const auto both = [](const crdt::or_set& s) { return s.contains("milk") && s.contains("eggs"); };
    CHECK(a->wait_until(both, 20s));
    CHECK(b->wait_until(both, 20s));
    REQUIRE(b->edit([](crdt::or_set& s) { s.remove("milk"); }));
    CHECK(
        a->wait_until([](const crdt::or_set& s) { return !s.contains("milk") && s.contains("eggs"); }, 20s));
  }

  TEST_CASE("a client the server refuses is told so; an unreachable server is an error, not a hang") {
    keel::test::scratch_schema schema;
    rooms_server s(schema.conninfo, 0, [](std::string_view, const keel::net::request& upgrade) {
      return upgrade.query_param("token") == "w" ? sync::access::read_write : sync::access::denied;
    });
    auto refused = sync::room_client::connect(s.room("secret"), {});
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == sync::errc::access_denied);
    auto options = s.room("secret");
    options.query = "token=w";
    auto allowed = sync::room_client::connect(options, {});
    CHECK(allowed.has_value());
    // A Yjs update that does not decode is refused before anything is sent.
    const keel::bytes garbage{9, 9, 9};
    CHECK_FALSE((*allowed)->send(garbage));
    auto nowhere = s.room("secret");
    nowhere.port = 1;  // nothing listens there
    nowhere.connect_timeout = 300ms;
    auto unreachable = sync::room_client::connect(nowhere, {});
    REQUIRE_FALSE(unreachable);
    CHECK(unreachable.error() == sync::errc::not_synced);
  }
}
