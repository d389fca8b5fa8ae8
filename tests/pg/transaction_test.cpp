#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/copy.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/pg/pipeline.hpp>
#include <keel/pg/pool.hpp>
#include <keel/pg/transaction.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

#include <support/pg.hpp>

using namespace keel;
using namespace std::chrono_literals;

namespace {
std::int64_t count(pg::connection& c, const std::string& table) {
  return c.query("SELECT count(*) FROM " + table).value().value<std::int64_t>().value();
}
}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("a transaction commits, rolls back, and rolls back when dropped") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (a int8)"));
    {
      auto tx = pg::transaction::begin(c).value();
      REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{1}));
      REQUIRE(tx.commit());
    }
    {
      auto tx = pg::transaction::begin(c).value();
      REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{2}));
      REQUIRE(tx.rollback());
    }
    {
      auto tx = pg::transaction::begin(c).value();
      REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{3}));
    }  // dropped without commit
    CHECK(count(c, "t") == 1);
    CHECK_FALSE(c.in_transaction());
  }

  TEST_CASE("a transaction never commits after an error") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (a int8 PRIMARY KEY)"));
    auto tx = pg::transaction::begin(c).value();
    REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{1}));
    CHECK(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{1}).error() == pg::errc::unique_violation);
    // The caller ignores the failure and commits anyway: keel refuses.
    CHECK(tx.commit().error() == pg::errc::transaction_aborted);
    CHECK(count(c, "t") == 0);
    CHECK_FALSE(c.in_transaction());
  }

  TEST_CASE("rolling back to a savepoint undoes a failed statement and keeps the transaction") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (a int8 PRIMARY KEY)"));
    auto tx = pg::transaction::begin(c).value();
    REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{1}));
    {
      auto sp = tx.make_savepoint().value();
      CHECK(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{1}).error() == pg::errc::unique_violation);
      REQUIRE(sp.rollback());
    }
    {
      auto sp = tx.make_savepoint().value();
      REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{2}));
      REQUIRE(sp.release());
    }
    {
      auto sp = tx.make_savepoint().value();
      REQUIRE(tx.query("INSERT INTO t VALUES ($1)", std::int64_t{3}));
    }  // dropped: rolled back to
    REQUIRE(tx.commit());
    CHECK(
        c.query("SELECT array_agg(a ORDER BY a) FROM t").value().value<std::vector<std::int64_t>>().value() ==
        std::vector<std::int64_t>{1, 2});
  }

  TEST_CASE("isolation levels are applied") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto tx = pg::transaction::begin(c, {.level = pg::isolation::serializable, .read_only = true}).value();
    CHECK(tx.query("SELECT current_setting('transaction_isolation')").value().value<std::string>().value() ==
          "serializable");
    CHECK(tx.execute("CREATE TABLE nope (a int)").error() == pg::errc::server_error);  // read-only
    CHECK(c.last_error().sqlstate == "25006");
  }

  TEST_CASE("retry_transaction re-runs two conflicting serializable transactions until both commit") {
    test::scratch_schema schema;
    {
      auto c = schema.connect();
      REQUIRE(c.execute(
          "CREATE TABLE counters (id int PRIMARY KEY, n int8); INSERT INTO counters VALUES (1, 0)"));
    }
    std::barrier both_read(2);
    std::atomic<int> attempts{0};
    auto worker = [&] {
      auto c = schema.connect();
      auto done = pg::retry_transaction(c,
                                        [&](pg::transaction& tx) -> result<std::int64_t> {
                                          const int attempt = ++attempts;
                                          auto n = tx.query("SELECT n FROM counters WHERE id = 1");
                                          if (!n) return n.error();
                                          // Both first attempts read before either writes: a guaranteed
                                          // conflict.
                                          if (attempt <= 2) both_read.arrive_and_wait();
                                          auto updated = tx.query("UPDATE counters SET n = $1 WHERE id = 1",
                                                                  n->value<std::int64_t>().value() + 1);
                                          if (!updated) return updated.error();
                                          return n->value<std::int64_t>().value() + 1;
                                        },
                                        {.transaction = {.level = pg::isolation::serializable}});
      CHECK(done.has_value());
    };
    std::thread a(worker), b(worker);
    a.join();
    b.join();
    auto c = schema.connect();
    CHECK(c.query("SELECT n FROM counters").value().value<std::int64_t>().value() == 2);  // no lost update
    CHECK(attempts.load() >= 3);  // one of them ran again
  }

  TEST_CASE("retry_transaction gives up on errors that retrying cannot fix") {
    test::scratch_schema schema;
    auto c = schema.connect();
    int runs = 0;
    auto r = pg::retry_transaction(c, [&](pg::transaction& tx) -> result<void> {
      ++runs;
      auto q = tx.query("SELECT * FROM missing");
      if (!q) return q.error();
      return {};
    });
    CHECK(r.error() == pg::errc::undefined_table);
    CHECK(runs == 1);
  }

  TEST_CASE("binary COPY loads many rows, and a bad row loads nothing") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (id int8, name text, score float8, note text)"));
    auto writer = pg::copy_writer::start(c, "t", {"id", "name", "score", "note"}).value();
    for (std::int64_t i = 0; i < 50'000; ++i) {
      const std::optional<std::string> note = i % 2 == 0 ? std::optional<std::string>("even") : std::nullopt;
      REQUIRE(writer.write_row(i, "name " + std::to_string(i), static_cast<double>(i) / 2, note));
    }
    CHECK(writer.finish().value() == 50'000);
    CHECK(count(c, "t") == 50'000);
    CHECK(c.query("SELECT name FROM t WHERE id = 4242").value().value<std::string>().value() == "name 4242");
    CHECK(c.query("SELECT count(*) FROM t WHERE note IS NULL").value().value<std::int64_t>().value() ==
          25'000);

    // int32 into an int8 column: the server rejects the binary data and nothing is loaded.
    auto bad = pg::copy_writer::start(c, "t", {"id", "name", "score", "note"}).value();
    REQUIRE(bad.write_row(std::int64_t{1}, "ok", 1.0, "x"));
    REQUIRE(bad.write_row(std::int32_t{2}, "bad", 1.0, "x"));
    CHECK(bad.finish().has_error());
    CHECK(count(c, "t") == 50'000);
    CHECK(bad.write_row(std::int64_t{1}).has_error());  // wrong column count is refused up front
    CHECK(c.query("SELECT 1::int8").value().value<std::int64_t>().value() == 1);  // connection still usable
  }

  TEST_CASE("pipeline sends many statements in one round trip and isolates failures") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (a int8 PRIMARY KEY)"));
    auto p = pg::pipeline::start(c).value();
    for (std::int64_t i = 0; i < 1000; ++i) REQUIRE(p.add("INSERT INTO t VALUES ($1)", i));
    REQUIRE(p.add("SELECT count(*) FROM t"));
    auto results = p.sync().value();
    REQUIRE(results.size() == 1001);
    CHECK(results.back().value().value<std::int64_t>().value() == 1000);

    REQUIRE(p.add("INSERT INTO t VALUES ($1)", std::int64_t{5000}));
    REQUIRE(p.add("INSERT INTO t VALUES ($1)", std::int64_t{1}));  // duplicate
    REQUIRE(p.add("INSERT INTO t VALUES ($1)", std::int64_t{5001}));
    auto mixed = p.sync().value();
    REQUIRE(mixed.size() == 3);
    CHECK(mixed[0].has_value());
    CHECK(mixed[1].error() == pg::errc::unique_violation);
    CHECK(mixed[2].error() == pg::errc::pipeline_aborted);
  }

  TEST_CASE("the pool bounds connections, times out, and counts") {
    test::scratch_schema schema;
    pg::pool pool({.conninfo = schema.conninfo, .max_size = 2, .acquire_timeout = 200ms});
    {
      auto a = pool.acquire().value();
      auto b = pool.acquire().value();
      CHECK(pool.stats().in_use == 2);
      CHECK(pool.acquire().error() == pg::errc::pool_timeout);
      CHECK(pool.stats().timeouts == 1);
    }
    auto stats = pool.stats();
    CHECK(stats.in_use == 0);
    CHECK(stats.idle == 2);
    CHECK(stats.acquired == 2);
  }

  TEST_CASE("the pool serves many threads and rolls back what they leave open") {
    test::scratch_schema schema;
    {
      auto c = schema.connect();
      REQUIRE(c.execute("CREATE TABLE t (a int8)"));
    }
    pg::pool pool({.conninfo = schema.conninfo, .max_size = 3});
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i) {
          auto c = pool.acquire();
          if (!c) {
            ++failures;
            continue;
          }
          if (i == 0) (void)(*c)->execute("BEGIN");  // left open on purpose
          if (!(*c)->query("INSERT INTO t VALUES ($1)", std::int64_t{t})) ++failures;
        }
      });
    }
    for (auto& t : threads) t.join();
    CHECK(failures == 0);
    CHECK(pool.stats().open <= 3);
    auto c = pool.acquire().value();
    CHECK_FALSE(c->in_transaction());
    // Each thread's first insert ran in the transaction it left open, which was rolled back.
    CHECK(c->query("SELECT count(*) FROM t").value().value<std::int64_t>().value() == 6 * 49);
  }

  TEST_CASE("the pool replaces connections terminated by the server") {
    test::scratch_schema schema;
    pg::pool pool({.conninfo = schema.conninfo, .max_size = 4});
    {
      std::vector<pg::pooled_connection> held;
      for (int i = 0; i < 4; ++i) held.push_back(pool.acquire().value());
    }
    CHECK(pool.stats().idle == 4);
    auto admin = schema.connect();
    REQUIRE(
        admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'keel' "
                    "AND pid <> pg_backend_pid() AND datname = current_database()"));
    // pg_terminate_backend only signals: wait until the backends are gone, however busy the machine.
    for (int tries = 0; tries < 500; ++tries) {
      auto left = admin.query(
          "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keel' AND pid <> pg_backend_pid() "
          "AND datname = current_database()");
      REQUIRE(left);
      if (left->value<std::int64_t>().value() == 0) break;
      std::this_thread::sleep_for(10ms);
    }
    for (int i = 0; i < 4; ++i) {
      auto c = pool.acquire().value();
      CHECK(c->query("SELECT 1::int8").value().value<std::int64_t>().value() == 1);
    }
    CHECK(pool.stats().replaced >= 1);
  }

  TEST_CASE("the pool recovers after a server restart") {
    auto* cluster = test::cluster();
    if (cluster == nullptr) {
      MESSAGE("skipped: needs the private cluster (KEEL_DATABASE_URL is set)");
      return;
    }
    test::scratch_schema schema;
    pg::pool pool({.conninfo = schema.conninfo, .max_size = 2});
    { auto c = pool.acquire().value(); }
    REQUIRE(cluster->restart());
    auto c = pool.acquire().value();
    CHECK(c->query("SELECT 1::int8").value().value<std::int64_t>().value() == 1);
  }

  TEST_CASE("migrations apply once, in order, even when four threads race") {
    test::scratch_schema schema;
    const pg::migration migrations[] = {
        {1, "create accounts", "CREATE TABLE accounts (id int8 PRIMARY KEY)"},
        {2, "add name", "ALTER TABLE accounts ADD COLUMN name text"},
        {3, "seed", "INSERT INTO accounts VALUES (1, 'first')"},
    };
    std::vector<std::thread> threads;
    std::atomic<int> applied{0}, failures{0};
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        auto c = schema.connect();
        auto report = pg::migrate(c, "test", migrations);
        if (!report)
          ++failures;
        else
          applied += static_cast<int>(report->applied.size());
      });
    }
    for (auto& t : threads) t.join();
    CHECK(failures == 0);
    CHECK(applied == 3);
    auto c = schema.connect();
    CHECK(count(c, "accounts") == 1);
    CHECK(c.query("SELECT array_agg(version ORDER BY version) FROM keel_migrations")
              ->value<std::vector<std::int64_t>>()
              .value() == std::vector<std::int64_t>{1, 2, 3});
    auto again = pg::migrate(c, "test", migrations).value();
    CHECK(again.applied.empty());
    CHECK(again.already_applied == 3);
  }

  TEST_CASE(
      "migrate and a session holding the migration lock by hand (bigint 0x6b65656c) exclude each other") {
    test::scratch_schema schema;
    const pg::migration migrations[] = {{1, "create", "CREATE TABLE a (id int8)"}};
    constexpr std::int64_t key = 0x6b65656c;  // what every keel version has locked
    auto old_process = schema.connect();
    auto observer = schema.connect();
    REQUIRE(old_process.query("SELECT pg_advisory_lock($1)", key));
    auto c = schema.connect();
    const int migrating_pid = c.backend_pid();
    result<pg::migration_report> report = pg::errc::invalid_argument;
    std::thread migrating([&] { report = pg::migrate(c, "test", migrations); });
    // Until migrate waits for the advisory lock (a sleep could pass by chance).
    bool waiting = false;
    for (int polls = 0; polls < 3000 && !waiting; ++polls) {
      waiting =
          observer
              .query("SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted",
                     std::int32_t{migrating_pid})
              .value()
              .value<std::int64_t>()
              .value() == 1;
      if (!waiting) std::this_thread::sleep_for(10ms);
    }
    CHECK(waiting);
    CHECK(count(observer,
                "pg_tables WHERE tablename = 'keel_migrations' AND schemaname = current_schema()") == 0);
    REQUIRE(old_process.query("SELECT pg_advisory_unlock($1)", key).value().value<bool>().value());
    migrating.join();
    REQUIRE(report);
    CHECK(report->applied == std::vector<std::int64_t>{1});
    // The other way round: while advisory_lock holds the key, a by-hand try finds it taken.
    auto held = pg::advisory_lock::acquire(c, pg::advisory_key::bigint(key)).value();
    CHECK_FALSE(old_process.query("SELECT pg_try_advisory_lock($1)", key).value().value<bool>().value());
    REQUIRE(held.release());
    CHECK(old_process.query("SELECT pg_try_advisory_lock($1)", key).value().value<bool>().value());
    // After migrate, nothing of the lock is left behind.
    CHECK(count(observer,
                "pg_locks WHERE locktype = 'advisory' AND pid = " + std::to_string(migrating_pid)) == 0);
  }

  TEST_CASE("an edited applied migration is refused, a failing one is rolled back") {
    test::scratch_schema schema;
    auto c = schema.connect();
    const pg::migration original[] = {{1, "create", "CREATE TABLE a (id int8)"}};
    REQUIRE(pg::migrate(c, "test", original));
    const pg::migration edited[] = {{1, "create", "CREATE TABLE a (id int4)"},
                                    {2, "more", "CREATE TABLE b (x int)"}};
    CHECK(pg::migrate(c, "test", edited).error() == pg::errc::migration_checksum_mismatch);
    CHECK(
        c.query("SELECT to_regclass('b') IS NULL").value().value<bool>().value());  // nothing further applied

    const pg::migration failing[] = {{1, "create", "CREATE TABLE a (id int8)"},
                                     {2, "half", "CREATE TABLE c (x int); SELECT * FROM missing"}};
    CHECK(pg::migrate(c, "test", failing).error() == pg::errc::migration_failed);
    CHECK(c.last_error().sqlstate == "42P01");
    CHECK(c.query("SELECT to_regclass('c') IS NULL").value().value<bool>().value());  // rolled back whole

    const pg::migration unordered[] = {{2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}};
    CHECK(pg::migrate(c, "test", unordered).error() == pg::errc::invalid_argument);
  }
}
