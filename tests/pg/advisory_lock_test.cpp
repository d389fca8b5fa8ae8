#include <keel/pg/advisory_lock.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/transaction.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include <support/pg.hpp>

using namespace keel;

namespace {
constexpr auto leader = pg::advisory_key::named("keel.test.leader");
constexpr auto other_name = pg::advisory_key::named("keel.test.other");
constexpr auto database_wide = pg::advisory_key::named("keel.test.database", false);

// Whether `conn`'s session holds an advisory lock, as Postgres sees it.
std::int64_t advisory_locks_held(pg::connection& conn) {
  return conn.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
      .value()
      .value<std::int64_t>()
      .value();
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("advisory keys are stable hashes of their names") {
    static_assert(pg::advisory_key::named("keel.test.leader").name_hash == leader.name_hash);
    CHECK(leader.name_hash != other_name.name_hash);
    CHECK(leader.per_schema);
    CHECK_FALSE(database_wide.per_schema);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("one session holds an advisory lock; the next takes it once released or gone") {
    test::scratch_schema schema;
    auto a = schema.connect();
    auto b = schema.connect();
    auto held = pg::advisory_lock::try_acquire(a, leader).value();
    REQUIRE(held.has_value());
    CHECK(held->held());
    CHECK(advisory_locks_held(a) == 1);
    CHECK_FALSE(pg::advisory_lock::try_acquire(b, leader).value().has_value());
    // Another name is another lock.
    CHECK(pg::advisory_lock::try_acquire(b, other_name).value().has_value());
    REQUIRE(held->release());
    CHECK_FALSE(held->held());
    CHECK(advisory_locks_held(a) == 0);
    {
      auto taken = pg::advisory_lock::try_acquire(b, leader).value();
      REQUIRE(taken.has_value());
      CHECK_FALSE(pg::advisory_lock::try_acquire(a, leader).value().has_value());
    }  // released by the destructor
    CHECK(pg::advisory_lock::try_acquire(a, leader).value().has_value());

    // A session that ends loses its locks: the election survives a crashed leader.
    auto c = schema.connect();
    auto kept = pg::advisory_lock::acquire(c, database_wide).value();
    CHECK_FALSE(pg::advisory_lock::try_acquire(b, database_wide).value().has_value());
    REQUIRE(b.query("SELECT pg_terminate_backend($1)", c.backend_pid()));
    // The terminated backend lets go when it has exited, which takes a moment on a loaded
    // machine: look until it has (a deadline, not a number of tries).
    bool taken_over = false;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!taken_over && std::chrono::steady_clock::now() < until) {
      taken_over = pg::advisory_lock::try_acquire(b, database_wide).value().has_value();
      if (!taken_over) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(taken_over);
  }

  TEST_CASE("per-schema keys elect one holder per schema; database-wide keys one per database") {
    test::scratch_schema first;
    test::scratch_schema second;
    auto a = first.connect();
    auto b = second.connect();
    auto in_first = pg::advisory_lock::try_acquire(a, leader).value();
    REQUIRE(in_first.has_value());
    CHECK(pg::advisory_lock::try_acquire(b, leader).value().has_value());
    auto wide = pg::advisory_lock::try_acquire(a, database_wide).value();
    REQUIRE(wide.has_value());
    CHECK_FALSE(pg::advisory_lock::try_acquire(b, database_wide).value().has_value());
  }

  TEST_CASE("a lock is really taken under any search_path, and released whatever happens after") {
    test::scratch_schema schema;
    auto a = schema.connect();
    auto b = schema.connect();
    // No existing schema on the search_path: current_schema() is NULL.
    REQUIRE(a.execute("SET search_path = nonesuch"));
    auto waited = pg::advisory_lock::acquire(a, leader).value();
    CHECK(advisory_locks_held(a) == 1);
    // The search_path changing after the lock was taken does not strand it.
    REQUIRE(a.execute("SET search_path = public"));
    REQUIRE(waited.release());
    CHECK(advisory_locks_held(a) == 0);

    // In an aborted transaction the release fails and the lock stays, to be released later.
    auto held = pg::advisory_lock::try_acquire(a, leader).value();
    REQUIRE(held.has_value());
    REQUIRE(a.execute("BEGIN"));
    CHECK_FALSE(a.execute("SELECT * FROM no_such_table"));
    const auto refused = held->release();
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == pg::errc::transaction_aborted);
    CHECK(held->held());
    REQUIRE(a.execute("ROLLBACK"));
    CHECK(advisory_locks_held(a) == 1);
    REQUIRE(held->release());
    CHECK(advisory_locks_held(a) == 0);
    CHECK(pg::advisory_lock::try_acquire(b, leader).value().has_value());
  }

  TEST_CASE("transaction-level advisory locks end with the transaction") {
    test::scratch_schema schema;
    auto a = schema.connect();
    auto b = schema.connect();
    {
      auto tx = pg::transaction::begin(a).value();
      REQUIRE(pg::advisory_xact_lock(a, leader));
      auto tb = pg::transaction::begin(b).value();
      CHECK_FALSE(pg::try_advisory_xact_lock(b, leader).value());
      REQUIRE(tb.rollback());
      REQUIRE(tx.commit());
    }
    auto tb = pg::transaction::begin(b).value();
    CHECK(pg::try_advisory_xact_lock(b, leader).value());
    REQUIRE(tb.commit());
  }

  TEST_CASE("row::as reads columns in order, and reports the first column that fails") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto r = c.query("SELECT 7::int8, 'seven'::text, NULL::int4").value();
    const auto [n, name, missing] = r[0].as<std::int64_t, std::string, std::optional<std::int32_t>>().value();
    CHECK(n == 7);
    CHECK(name == "seven");
    CHECK_FALSE(missing.has_value());
    CHECK(r[0].as<std::int64_t, std::string, std::int32_t>().error() == pg::errc::unexpected_null);
    CHECK(r[0].as<std::string>().error() == pg::errc::type_mismatch);
    CHECK(r[0].as<std::int64_t, std::string, std::optional<std::int32_t>, std::int32_t>().error() ==
          pg::errc::out_of_range);
    // From a later column: the columns of a second joined table.
    const auto [later_name, later_missing] = r[0].as<std::string, std::optional<std::int32_t>>(1).value();
    CHECK(later_name == "seven");
    CHECK_FALSE(later_missing.has_value());
    CHECK(r[0].as<std::int64_t>(1).error() == pg::errc::type_mismatch);
    CHECK(r[0].as<std::optional<std::int32_t>, std::int32_t>(2).error() == pg::errc::out_of_range);
  }
}
