// keel::sync's live table changes driven by real WebSocket clients (npm ws in node,
// tests/sync/changes_clients.cjs) against a keel::net server on a real Postgres: commit order
// with filters (and two transactions committing against the order of their ids), resuming
// after a reconnect with exactly the missed changes, resync when a position was pruned,
// refused and denied subscriptions, and a seeded property test of random concurrent writers
// against a client that drops and comes back at random.
#include <keel/sync.hpp>

#include "support/pg.hpp"
#include "support/subprocess.hpp"

#include <boost/json.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

namespace sync = keel::sync;
namespace json = boost::json;

std::filesystem::path clients_dir() {
  if (const char* dir = std::getenv("KEEL_TEST_CLIENTS_DIR")) return dir;  // NOLINT(concurrency-mt-unsafe)
  return KEEL_TEST_CLIENTS_DIR;
}

// The published table: `secret` is never sent (the publication lists the other columns).
constexpr const char* items_table = R"sql(
  CREATE TABLE items (id bigint PRIMARY KEY, shard int NOT NULL, name text NOT NULL, secret text))sql";

std::vector<sync::publication> publications() {
  return {{.name = "items",
           .table = "items",
           .filter_columns = {"shard", "name"},
           .columns = {"id", "shard", "name"}},
          {.name = "all_items", .table = "items"}};
}

// A keel server with the changes mounted, on a port of its own, over one schema's tables.
struct changes_server {
  keel::pg::pool pool;
  keel::net::server server{{.address = "127.0.0.1", .port = 0, .threads = 2}};
  std::shared_ptr<sync::changes> feed;

  changes_server(const std::string& conninfo, sync::changes_options options)
      : pool({.conninfo = conninfo, .max_size = 6}) {
    options.pool = &pool;
    feed = sync::changes::mount(server, std::move(options)).value();
    REQUIRE(server.start());
  }
  ~changes_server() {
    server.stop();
    server.wait();
  }
  changes_server(const changes_server&) = delete;
  changes_server& operator=(const changes_server&) = delete;

  [[nodiscard]] std::string url(const std::string& query = "") const {
    return "ws://127.0.0.1:" + std::to_string(server.port()) + "/changes" + query;
  }
};

sync::changes_options options_with(const std::function<void(sync::changes_options&)>& change = {}) {
  sync::changes_options o{.publications = publications(), .poll_interval = std::chrono::milliseconds(200)};
  if (change) change(o);
  return o;
}

json::object run_clients(const std::string& arguments) {
  const auto ran = keel::test::run_command("KEEL_TEST_CLIENTS_DIR='" + clients_dir().string() + "' node '" +
                                           KEEL_TEST_SOURCE_DIR "/sync/changes_clients.cjs' " + arguments);
  INFO("changes_clients.cjs " << arguments << " said:\n" << ran.output.substr(0, 3000));
  REQUIRE(ran.status == 0);
  const auto line = ran.output.rfind("\n{");
  const auto start = line == std::string::npos ? ran.output.find('{') : line + 1;
  REQUIRE(start != std::string::npos);
  return json::parse(std::string_view(ran.output).substr(start)).as_object();
}

// Subscribes with `request` and records what arrives until the change of the row named `until`
// (empty: until the acknowledgement) or the close.
json::object collect(const changes_server& s, const json::object& request, const std::string& until,
                     const std::string& query = "") {
  return run_clients("collect '" + s.url(query) + "' '" + json::serialize(request) + "' '" + until + "'");
}

json::object subscribe(const std::string& publication, const json::value& after,
                       const json::object& filter = {}) {
  return {{"subscribe", publication}, {"filter", filter}, {"after", after}};
}

// Waits until `condition` holds, up to 20 s.
bool eventually(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a poll of the condition
  }
  return true;
}

std::string text(const json::value& v) {
  return std::string(v.as_string());
}

// "op id" for each change received, from its row (or, for a delete, its old row).
std::vector<std::string> summary(const json::object& out) {
  std::vector<std::string> s;
  for (const auto& c : out.at("changes").as_array()) {
    const auto& o = c.as_object();
    const auto& row = o.contains("row") ? o.at("row") : o.at("old");
    s.push_back(text(o.at("op")) + " " + std::to_string(row.at("id").to_number<std::int64_t>()));
  }
  return s;
}

std::vector<std::string> positions(const json::array& changes) {
  std::vector<std::string> p;
  for (const auto& c : changes) p.push_back(text(c.at("position")));
  return p;
}

// The change table's order, as position tokens: every change after `after` whose row or old
// row satisfies `where` (SQL over c.row_data / c.old_data, from the test).
std::vector<std::string> table_order(keel::pg::connection& c, const std::string& after,
                                     const std::string& where) {
  const auto slash = after.find('/');
  const std::int64_t tx = std::stoll(after.substr(0, slash));
  const std::int64_t id = std::stoll(after.substr(slash + 1));
  std::vector<std::string> out;
  const auto rows = c.query(
                         "SELECT transaction_id::text || '/' || id::text FROM keel_sync_changes c "
                         "WHERE (transaction_id, id) > ($1, $2) AND (" +
                             where + ") ORDER BY transaction_id, id",
                         tx, id)
                        .value();
  for (const auto& r : rows) out.push_back(r.get<std::string>(0).value());
  return out;
}

}  // namespace

TEST_SUITE("node") {
  TEST_CASE("changes: inserts, updates and deletes arrive in commit order, filtered, columns limited") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo, options_with());
    auto client = std::async(std::launch::async, [&] {
      return collect(s, subscribe("items", nullptr, {{"shard", 1}}), "end");
    });
    REQUIRE(eventually([&] { return s.feed->stats().subscriptions == 1; }));

    REQUIRE(c.execute("INSERT INTO items VALUES (1, 1, 'a', 's1'), (2, 2, 'b', 's2')"));
    REQUIRE(
        c.execute("UPDATE items SET name = 'a2' WHERE id = 1; UPDATE items SET name = 'b2' WHERE id = 2"));
    // Two transactions committing against the order of their ids: the first to write commits
    // last. A reader by sequence number alone would deliver 4 and then skip 3.
    auto t1 = schema.connect();
    auto t2 = schema.connect();
    REQUIRE(t1.execute("BEGIN; INSERT INTO items VALUES (3, 1, 'c', 's3')"));
    REQUIRE(t2.execute("BEGIN; INSERT INTO items VALUES (4, 1, 'd', 's4'); COMMIT"));
    // Reads after 4's commit: 4 waits behind the horizon while 3 is open.
    const auto reads = s.feed->stats().reads;
    REQUIRE(eventually([&] { return s.feed->stats().reads >= reads + 3; }));
    CHECK(s.feed->stats().changes_sent == 2);
    REQUIRE(t1.execute("COMMIT"));
    // Into the filter and out of it: both are sent (the row or the old row matches).
    REQUIRE(c.execute("UPDATE items SET shard = 1 WHERE id = 2; UPDATE items SET shard = 2 WHERE id = 1"));
    REQUIRE(c.execute("DELETE FROM items WHERE id = 1; DELETE FROM items WHERE id = 4"));
    REQUIRE(c.execute("INSERT INTO items VALUES (5, 1, 'end', 's5')"));
    const auto out = client.get();

    CHECK(summary(out) == std::vector<std::string>{"insert 1", "update 1", "insert 3", "insert 4", "update 2",
                                                   "update 1", "delete 4", "insert 5"});
    const auto& changes = out.at("changes").as_array();
    CHECK(text(changes[1].at("old").at("name")) == "a");
    CHECK(text(changes[1].at("row").at("name")) == "a2");
    CHECK(changes[4].at("old").at("shard").to_number<int>() == 2);
    CHECK(changes[5].at("row").at("shard").to_number<int>() == 2);
    for (const auto& change : changes) {
      for (const char* image : {"row", "old"}) {
        if (const auto* r = change.as_object().if_contains(image))
          CHECK_FALSE(r->as_object().contains("secret"));
      }
    }
    // Exactly the change table's order after the acknowledged position, filtered.
    CHECK(positions(changes) ==
          table_order(c, text(out.at("subscribed")), "row_data->>'shard' = '1' OR old_data->>'shard' = '1'"));
    CHECK(s.feed->stats().notifications > 0);
  }

  TEST_CASE("changes: a client that reconnects with its last position gets exactly what it missed") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo, options_with());
    const auto start = text(collect(s, subscribe("all_items", nullptr), "").at("subscribed"));

    REQUIRE(c.execute("INSERT INTO items VALUES (1, 1, 'a', NULL)"));
    REQUIRE(c.execute("INSERT INTO items VALUES (2, 1, 'b', NULL)"));
    REQUIRE(c.execute("UPDATE items SET name = 'b-seen' WHERE id = 2"));
    const auto first = collect(s, subscribe("all_items", json::value(start)), "b-seen");
    CHECK(summary(first) == std::vector<std::string>{"insert 1", "insert 2", "update 2"});
    const auto last = positions(first.at("changes").as_array()).back();

    // Committed while the client is away.
    REQUIRE(c.execute("DELETE FROM items WHERE id = 1"));
    REQUIRE(
        c.execute("BEGIN; INSERT INTO items VALUES (3, 2, 'c', NULL); UPDATE items SET shard = 3; COMMIT"));
    REQUIRE(c.execute("INSERT INTO items VALUES (4, 1, 'end', NULL)"));
    const auto second = collect(s, subscribe("all_items", json::value(last)), "end");
    CHECK(summary(second) ==
          std::vector<std::string>{"delete 1", "insert 3", "update 2", "update 3", "insert 4"});

    // No gap, no duplicate: the two sessions together are the change table after `start`.
    auto received = positions(first.at("changes").as_array());
    for (const auto& p : positions(second.at("changes").as_array())) received.push_back(p);
    CHECK(received == table_order(c, start, "true"));
    CHECK(first.at("resync").is_null());
    CHECK(second.at("resync").is_null());
  }

  TEST_CASE("changes: a position older than the retained changes is told to resync, never skipped") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo, options_with([](sync::changes_options& o) {
                       o.retention = {.max_count = 2, .interval = std::chrono::hours(1)};
                     }));
    const auto start = text(collect(s, subscribe("all_items", nullptr), "").at("subscribed"));
    for (int i = 1; i <= 5; ++i)
      REQUIRE(c.execute("INSERT INTO items VALUES (" + std::to_string(i) + ", 1, 'n" + std::to_string(i) +
                        "', NULL)"));
    const auto all = table_order(c, start, "true");
    REQUIRE(all.size() == 5);
    // Pruning keeps the 2 newest.
    CHECK(s.feed->prune_now().value() == 3);
    CHECK(table_order(c, start, "true") == std::vector<std::string>(all.begin() + 3, all.end()));

    const auto behind = collect(s, subscribe("all_items", json::value(start)), "n5");
    CHECK(behind.at("subscribed").is_null());
    CHECK(behind.at("changes").as_array().empty());
    CHECK(text(behind.at("resync")).find("pruned") != std::string::npos);
    CHECK(behind.at("closed").at("code").to_number<int>() == 4000);
    // At the end of the pruned prefix nothing is missing: no resync.
    const auto at_edge = collect(s, subscribe("all_items", json::value(all[2])), "n5");
    CHECK(summary(at_edge) == std::vector<std::string>{"insert 4", "insert 5"});
    // A position from another database (ahead of this one) is not taken either.
    const auto ahead = collect(s, subscribe("all_items", "999999999999/1"), "n5");
    CHECK(text(ahead.at("resync")).find("ahead of this database") != std::string::npos);
    CHECK(ahead.at("closed").at("code").to_number<int>() == 4000);
    CHECK(s.feed->stats().resyncs == 2);
  }

  TEST_CASE("changes: with polling off, NOTIFY wakes the reader, and a lost listener catches up") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo,
                     options_with([](sync::changes_options& o) { o.poll_interval = std::chrono::hours(1); }));
    auto client =
        std::async(std::launch::async, [&] { return collect(s, subscribe("all_items", nullptr), "second"); });
    REQUIRE(eventually([&] { return s.feed->stats().subscriptions == 1; }));
    REQUIRE(c.execute("INSERT INTO items VALUES (1, 1, 'first', NULL)"));
    REQUIRE(eventually([&] { return s.feed->stats().changes_sent == 1; }));
    // The listener's connection is cut; what commits while it is away arrives when it is back.
    const auto cut = c.query(
                          "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE query = 'LISTEN keel_sync_changes' AND datname = current_database() "
                          "AND pid <> pg_backend_pid()) t")
                         .value()
                         .value<std::int64_t>()
                         .value();
    REQUIRE(cut == 1);
    REQUIRE(c.execute("INSERT INTO items VALUES (2, 1, 'second', NULL)"));
    const auto out = client.get();
    CHECK(summary(out) == std::vector<std::string>{"insert 1", "insert 2"});
  }

  TEST_CASE("changes: a filter that passes changes gives progress positions, so a return is not pruned") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo, options_with([](sync::changes_options& o) {
                       o.retention = {.max_count = 1, .interval = std::chrono::hours(1)};
                     }));
    const auto start = text(collect(s, subscribe("items", nullptr), "").at("subscribed"));
    REQUIRE(c.execute("INSERT INTO items VALUES (1, 2, 'x', NULL), (2, 2, 'y', NULL), (3, 1, 'mine', NULL)"));
    const auto first = collect(s, subscribe("items", json::value(start), {{"shard", 1}}), "mine");
    REQUIRE(summary(first) == std::vector<std::string>{"insert 3"});
    const auto last_change = positions(first.at("changes").as_array()).back();

    // Changes this client does not see pass by while it listens: it is given a progress position.
    auto passing = std::async(std::launch::async, [&] {
      return collect(s, subscribe("items", json::value(last_change), {{"shard", 1}}), "@progress");
    });
    REQUIRE(eventually([&] { return s.feed->stats().subscriptions == 1; }));
    REQUIRE(c.execute("INSERT INTO items VALUES (4, 2, 'z', NULL), (5, 2, 'w', NULL)"));
    const auto second = passing.get();
    CHECK(second.at("changes").as_array().empty());
    REQUIRE(second.at("progress").as_array().size() == 1);
    const auto progress = text(second.at("progress").as_array()[0]);

    CHECK(s.feed->prune_now().value() == 4);  // the newest change (5) is kept
    REQUIRE(c.execute("INSERT INTO items VALUES (6, 1, 'mine2', NULL)"));
    // From its last change it would have missed 4, had 4 matched: resync.
    const auto from_change =
        collect(s, subscribe("items", json::value(last_change), {{"shard", 1}}), "mine2");
    CHECK(text(from_change.at("resync")).find("pruned") != std::string::npos);
    CHECK(from_change.at("changes").as_array().empty());
    // From its progress position nothing is missing.
    const auto from_progress = collect(s, subscribe("items", json::value(progress), {{"shard", 1}}), "mine2");
    CHECK(summary(from_progress) == std::vector<std::string>{"insert 6"});
    CHECK(from_progress.at("resync").is_null());
  }

  TEST_CASE("changes: a client that stops reading is told to resync once its queue is full") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    changes_server s(schema.conninfo, options_with([](sync::changes_options& o) { o.max_queued = 8; }));
    const auto signal =
        std::filesystem::temp_directory_path() /
        ("keel_changes_stall_" + std::to_string(::getpid()) + "_" + std::to_string(s.server.port()));
    std::filesystem::remove(signal);
    auto client = std::async(std::launch::async, [&] {
      return run_clients("stall '" + s.url() + "' '" + json::serialize(subscribe("all_items", nullptr)) +
                         "' '" + signal.string() + "'");
    });
    REQUIRE(eventually([&] { return s.feed->stats().subscriptions == 1; }));
    // 400 changes of 64 KiB: more than the socket buffers hold, so the queue fills.
    REQUIRE(
        c.execute("INSERT INTO items SELECT g, 1, 'big', repeat('x', 65536) FROM generate_series(1, 400) g"));
    const bool told = eventually([&] { return s.feed->stats().resyncs == 1; });
    { std::ofstream(signal) << "go"; }
    const auto out = client.get();
    std::filesystem::remove(signal);
    REQUIRE(told);
    CHECK(out.at("subscribed").is_string());
    CHECK(out.at("changes").to_number<int>() < 400);
    CHECK(text(out.at("resync")).find("too far behind") != std::string::npos);
    CHECK(out.at("closed").at("code").to_number<int>() == 4000);
  }

  TEST_CASE("changes: denied, unknown, unfilterable, malformed and bad-position subscriptions are closed") {
    keel::test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(items_table));
    REQUIRE(c.execute("INSERT INTO items VALUES (1, 1, 'kept', 'x')"));
    changes_server s(schema.conninfo, options_with([](sync::changes_options& o) {
                       o.authorize = [](std::string_view publication, const sync::changes_filter& filter,
                                        const keel::net::request& upgrade) {
                         // The "items" publication only with a shard filter, and only with the token.
                         if (upgrade.query_param("token") != "ok") return false;
                         return publication != "items" || filter.contains("shard");
                       };
                     }));
    const auto closed = [&](const json::object& out, int code, const std::string& reason_part) {
      CAPTURE(json::serialize(out));
      CHECK(out.at("closed").at("code").to_number<int>() == code);
      CHECK(text(out.at("closed").at("reason")).find(reason_part) != std::string::npos);
      CHECK(text(out.at("error")).find(reason_part) != std::string::npos);
      CHECK(out.at("subscribed").is_null());
    };
    closed(collect(s, subscribe("all_items", nullptr), "", "?token=no"), 1008, "not authorized");
    closed(collect(s, subscribe("items", nullptr), "", "?token=ok"), 1008, "not authorized");
    closed(collect(s, subscribe("nope", nullptr), "", "?token=ok"), 1008, "no such publication");
    closed(collect(s, subscribe("items", nullptr, {{"secret", "x"}}), "", "?token=ok"), 1008,
           "cannot be filtered on column");
    closed(collect(s, subscribe("items", nullptr, {{"shard", json::array{1}}}), "", "?token=ok"), 1008,
           "filter values are strings");
    closed(collect(s, subscribe("all_items", "12-34"), "", "?token=ok"), 1008, "not a position");
    closed(collect(s, subscribe("all_items", 17), "", "?token=ok"), 1008, "must be a position");
    closed(run_clients("collect '" + s.url("?token=ok") + "' '{nope' ''"), 1002, "not a JSON object");
    closed(run_clients("collect '" + s.url("?token=ok") + "' '[1,2]' ''"), 1002, "not a JSON object");
    closed(run_clients("collect '" + s.url("?token=ok") + R"(' '{"filter": {}}' '')"), 1008,
           "must name a publication");
    CHECK(s.feed->stats().refused == 10);
    CHECK(s.feed->stats().subscriptions == 0);
    // Nothing stored was touched, and an allowed client still subscribes.
    CHECK(c.query("SELECT name FROM items WHERE id = 1").value().value<std::string>().value() == "kept");
    const auto ok = collect(s, subscribe("items", nullptr, {{"shard", "1"}}), "", "?token=ok");
    CHECK(ok.at("subscribed").is_string());
    CHECK(ok.at("error").is_null());
  }

  TEST_CASE("changes: random concurrent writers, a client dropping at random: it gets the table's order") {
    keel::test::scratch_schema schema;
    auto setup = schema.connect();
    REQUIRE(setup.execute(items_table));
    changes_server s(schema.conninfo, options_with([](sync::changes_options& o) { o.batch = 7; }));
    for (const std::uint32_t seed : {11U, 12U, 13U}) {
      CAPTURE(seed);
      MESSAGE("changes property test seed " << seed);
      const auto start = text(collect(s, subscribe("items", nullptr), "").at("subscribed"));
      const auto end_name = "end-" + std::to_string(seed);
      auto client = std::async(std::launch::async, [&] {
        return run_clients("wander '" + s.url() + "' '" +
                           json::serialize(subscribe("items", json::value(start), {{"shard", 0}})) + "' '" +
                           end_name + "' " + std::to_string(seed));
      });
      REQUIRE(eventually([&] { return s.feed->stats().subscriptions >= 1; }));

      // Four connections, their statements interleaved at random from one thread: transactions
      // overlap, commit in any order against the order of their ids, and some roll back. Each
      // connection touches only rows it inserted, so no statement waits for another's lock.
      std::mt19937 random(seed);
      struct writer {
        keel::pg::connection c;
        bool open = false;
        std::vector<std::int64_t> committed, visible;
      };
      std::vector<writer> writers;
      writers.reserve(4);
      for (int k = 0; k < 4; ++k) writers.push_back({schema.connect()});
      std::int64_t next_id = std::int64_t{seed} * 100'000;
      for (int step = 0; step < 400; ++step) {
        auto& w = writers[random() % writers.size()];
        const auto roll = random() % 100;
        if (!w.open) {
          REQUIRE(w.c.execute("BEGIN"));
          w.open = true;
          w.visible = w.committed;
        } else if (roll < 15) {
          REQUIRE(w.c.execute("COMMIT"));
          w.open = false;
          w.committed = w.visible;
          continue;
        } else if (roll < 20) {
          REQUIRE(w.c.execute("ROLLBACK"));
          w.open = false;
          continue;
        }
        const auto op = random() % 3;
        if (op == 0 || w.visible.empty()) {
          const auto id = ++next_id;
          REQUIRE(w.c.query("INSERT INTO items VALUES ($1, $2, $3, NULL)", id,
                            static_cast<std::int32_t>(random() % 2), "r" + std::to_string(id)));
          w.visible.push_back(id);
        } else if (op == 1) {
          const auto id = w.visible[random() % w.visible.size()];
          REQUIRE(w.c.query("UPDATE items SET shard = $2, name = name || '+' WHERE id = $1", id,
                            static_cast<std::int32_t>(random() % 2)));
        } else {
          const auto at = random() % w.visible.size();
          REQUIRE(w.c.query("DELETE FROM items WHERE id = $1", w.visible[at]));
          w.visible.erase(w.visible.begin() + static_cast<std::ptrdiff_t>(at));
        }
      }
      for (auto& w : writers) {
        if (w.open) REQUIRE(w.c.execute("COMMIT"));
      }
      REQUIRE(setup.query("INSERT INTO items VALUES ($1, 0, $2, NULL)", ++next_id, end_name));
      const auto out = client.get();

      std::vector<std::string> received;
      for (const auto& change : out.at("changes").as_array()) received.push_back(text(change.at("position")));
      const auto expected = table_order(setup, start, "row_data->>'shard' = '0' OR old_data->>'shard' = '0'");
      CHECK(received.size() == expected.size());
      CHECK(received == expected);
      CHECK(expected.size() > 50);
      CHECK(out.at("reconnects").to_number<int>() > 3);
      MESSAGE("seed " << seed << ": " << received.size() << " changes over "
                      << out.at("reconnects").to_number<int>() << " reconnects");
    }
    CHECK(s.feed->stats().resyncs == 0);
  }
}
