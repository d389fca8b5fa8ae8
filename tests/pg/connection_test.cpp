#include <keel/pg/connection.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include <support/pg.hpp>

using namespace keel;

TEST_SUITE("pg") {
  TEST_CASE("server errors keep SQLSTATE, message, detail, hint and the statement") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute(
        "CREATE TABLE users (id int8 PRIMARY KEY, email text UNIQUE NOT NULL CHECK (email <> ''))"));
    REQUIRE(c.query("INSERT INTO users VALUES ($1, $2)", std::int64_t{1}, "a@example.com"));

    auto duplicate = c.query("INSERT INTO users VALUES ($1, $2)", std::int64_t{2}, "a@example.com");
    REQUIRE(duplicate.has_error());
    CHECK(duplicate.error() == pg::errc::unique_violation);
    const auto& d = c.last_error();
    CHECK(d.sqlstate == "23505");
    CHECK(d.constraint == "users_email_key");
    CHECK(d.detail.find("a@example.com") != std::string::npos);
    CHECK(d.statement == "INSERT INTO users VALUES ($1, $2)");
    CHECK(d.to_string().find("23505") != std::string::npos);

    CHECK(c.query("INSERT INTO users VALUES ($1, NULL)", std::int64_t{3}).error() ==
          pg::errc::not_null_violation);
    CHECK(c.query("INSERT INTO users VALUES ($1, '')", std::int64_t{3}).error() == pg::errc::check_violation);
    CHECK(c.query("SELECT * FROM nowhere").error() == pg::errc::undefined_table);
    CHECK(c.query("SELECT nope FROM users").error() == pg::errc::undefined_column);
    CHECK(c.query("SELEC 1").error() == pg::errc::syntax_error);
    CHECK(c.last_error().position == 1);
    CHECK(c.query("SELECT 1/0").error() == pg::errc::server_error);
    CHECK(c.last_error().sqlstate == "22012");
    CHECK(c.query("SELECT 1/0").error().message().find("last_error") != std::string::npos);

    // Nothing was lost: the one good row is still there.
    CHECK(c.query("SELECT count(*) FROM users").value().value<std::int64_t>().value() == 1);
  }

  TEST_CASE("connection failures are clear") {
    pg::diagnostics why;
    auto c = pg::connection::connect("host=127.0.0.1 port=1 connect_timeout=2", {}, &why);
    REQUIRE(c.has_error());
    CHECK(c.error() == pg::errc::connection_failed);
    CHECK_FALSE(why.message.empty());
  }

  TEST_CASE("statements are prepared once per connection and survive DISCARD ALL") {
    test::scratch_schema schema;
    auto c = schema.connect();
    for (int i = 0; i < 5; ++i)
      CHECK(c.query("SELECT $1::int8 + 1", std::int64_t{i}).value().value<std::int64_t>() == i + 1);
    CHECK(c.cached_statements() == 1);
    auto prepared = c.query("SELECT count(*) FROM pg_prepared_statements").value();
    CHECK(prepared.value<std::int64_t>().value() == 2);
    REQUIRE(c.execute("DISCARD ALL"));
    CHECK(c.query("SELECT $1::int8 + 1", std::int64_t{41}).value().value<std::int64_t>() == 42);
  }

  TEST_CASE("a cached statement is re-prepared when its table changes shape") {
    test::scratch_schema schema;
    auto c = schema.connect();
    REQUIRE(c.execute("CREATE TABLE t (a int8)"));
    REQUIRE(c.query("INSERT INTO t VALUES ($1)", std::int64_t{1}));
    CHECK(c.query("SELECT * FROM t WHERE a = $1", std::int64_t{1}).value().columns() == 1);
    REQUIRE(c.execute("ALTER TABLE t ADD COLUMN b text"));
    auto after = c.query("SELECT * FROM t WHERE a = $1", std::int64_t{1});
    REQUIRE(after.has_value());
    CHECK(after->columns() == 2);
  }

  TEST_CASE("the statement cache is bounded") {
    test::scratch_schema schema;
    auto c = pg::connection::connect(schema.conninfo, {.statement_cache_size = 4}).value();
    for (int i = 0; i < 10; ++i) {
      REQUIRE(c.query("SELECT $1::int8 + " + std::to_string(i), std::int64_t{1}));
    }
    CHECK(c.cached_statements() == 4);
    // The count query is the fifth statement and pushed the oldest out before it ran.
    CHECK(c.query("SELECT count(*) FROM pg_prepared_statements").value().value<std::int64_t>().value() == 4);
  }

  TEST_CASE("execute runs several statements and reads text results") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto r = c.execute(
        "CREATE TABLE t (a int8); INSERT INTO t VALUES (1), (2); SELECT sum(a)::int8, 'x', true FROM t");
    REQUIRE(r.has_value());
    CHECK(r->value<std::int64_t>().value() == 3);
    CHECK((*r)[0].get<std::string>(1).value() == "x");
    CHECK((*r)[0].get<bool>(2).value());
    CHECK(c.query("DELETE FROM t").value().affected() == 2);
  }

  TEST_CASE("identifiers are quoted, values never spliced") {
    test::scratch_schema schema;
    auto c = schema.connect();
    CHECK(c.quote_identifier("weird\"name").value() == "\"weird\"\"name\"");
    const std::string hostile = "'); DROP TABLE t; --";
    REQUIRE(c.execute("CREATE TABLE t (s text)"));
    REQUIRE(c.query("INSERT INTO t VALUES ($1)", hostile));
    CHECK(c.query("SELECT s FROM t").value().value<std::string>().value() == hostile);
  }

  TEST_CASE("a terminated backend is detected without a query, and reset reconnects") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto admin = schema.connect();
    const int pid = c.backend_pid();
    REQUIRE(admin.query("SELECT pg_terminate_backend($1)", std::int32_t{pid}));
    // The server closes the socket asynchronously; give it a moment.
    for (int i = 0; i < 100 && c.probe(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK_FALSE(c.probe());
    CHECK(c.query("SELECT 1").error() == pg::errc::connection_lost);
    REQUIRE(c.reset());
    CHECK(c.query("SELECT 1::int8").value().value<std::int64_t>().value() == 1);
    CHECK(c.backend_pid() != pid);
  }

  TEST_CASE("cancel stops a running statement from another thread") {
    test::scratch_schema schema;
    auto c = schema.connect();
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      CHECK(c.cancel());
    });
    CHECK(c.query("SELECT pg_sleep(30)").error() == pg::errc::query_canceled);
    canceller.join();
  }
}

TEST_SUITE("pg") {
  TEST_CASE("send_params / receive: one statement in flight while the caller works; views into the result") {
    test::scratch_schema schema;
    auto c = schema.connect();
    CHECK(c.receive().error() == pg::errc::invalid_argument);  // nothing sent
    REQUIRE(c.send_params("SELECT $1::text || 'b', '{\"a\": 1}'::json, pg_backend_pid()", pg::params("a")));
    CHECK(c.awaiting_answer());
    CHECK(c.send_params("SELECT 1", pg::params()).error() == pg::errc::invalid_argument);  // one at a time
    auto rows = c.receive();
    REQUIRE(rows);
    CHECK(!c.awaiting_answer());
    CHECK((*rows)[0].get<std::string_view>(0).value() == "ab");
    CHECK((*rows)[0].get<std::string_view>(1).value() == R"({"a": 1})");
    CHECK((*rows)[0].get<std::string_view>(2).error() == pg::errc::type_mismatch);
    CHECK(c.execute("SELECT 1").value().value<std::string_view>().value() == "1");  // text results too

    // A failure comes back from receive() with its SQLSTATE; the connection goes on.
    REQUIRE(c.send_params("SELECT 1 / $1::int", pg::params(std::int32_t{0})));
    CHECK(c.receive().error() == pg::errc::server_error);
    CHECK(c.last_error().sqlstate == "22012");
    CHECK(c.query("SELECT 2").value().value<std::int32_t>().value() == 2);
  }

  TEST_CASE("read_ahead: an answer taken from the socket while the caller works is received whole") {
    test::scratch_schema schema;
    auto c = schema.connect();
    c.read_ahead();  // nothing in flight: nothing to do
    CHECK(!c.awaiting_answer());
    // An answer of a few megabytes: more than a socket holds, so the server waits on the reader.
    REQUIRE(c.send_params("SELECT g, repeat('x', 100) || g FROM generate_series(1, $1::int) g",
                          pg::params(std::int32_t{50'000})));
    for (int k = 0; k < 200; ++k) c.read_ahead();
    CHECK(c.awaiting_answer());
    auto rows = c.receive();
    REQUIRE(rows);
    REQUIRE(rows->size() == 50'000);
    for (const std::size_t k : {0UL, 1UL, 24'999UL, 49'999UL}) {
      CAPTURE(k);
      CHECK((*rows)[k].get<std::int32_t>(0).value() == static_cast<std::int32_t>(k + 1));
      CHECK((*rows)[k].get<std::string_view>(1).value() == std::string(100, 'x') + std::to_string(k + 1));
    }
    // A failure read ahead is still the answer's: receive() reports it and the connection goes on.
    REQUIRE(c.send_params("SELECT 1 / (g - 3) FROM generate_series(1, 5) g", pg::params()));
    c.read_ahead();
    CHECK(c.receive().error() == pg::errc::server_error);
    CHECK(c.last_error().sqlstate == "22012");
    CHECK(c.query("SELECT 2").value().value<std::int32_t>().value() == 2);
  }
}

TEST_SUITE("pg") {
  TEST_CASE("wait_for_notifications: what LISTEN brings, counted; a timeout is 0; a lost backend an error") {
    test::scratch_schema schema;
    auto listening = schema.connect();
    auto sender = schema.connect();
    REQUIRE(listening.execute("LISTEN keel_test_channel"));
    CHECK(listening.wait_for_notifications(std::chrono::milliseconds(20)).value() == 0);

    // Sent from another thread while this one waits.
    std::thread later([&] { REQUIRE(sender.notify("keel_test_channel", "one")); });
    CHECK(listening.wait_for_notifications(std::chrono::seconds(20)).value() == 1);
    later.join();

    // Received while a statement ran: counted at the next wait without reading the socket.
    REQUIRE(sender.notify("keel_test_channel", "two"));
    REQUIRE(sender.notify("keel_test_channel", "three"));
    std::size_t seen = 0;
    while (seen < 2) {
      REQUIRE(listening.query("SELECT 1"));
      seen += listening.wait_for_notifications(std::chrono::seconds(20)).value();
    }
    CHECK(seen == 2);

    REQUIRE(sender.query("SELECT pg_terminate_backend($1)", listening.backend_pid()));
    CHECK(listening.wait_for_notifications(std::chrono::seconds(20)).error() == pg::errc::connection_lost);
    CHECK(!listening.is_open());
  }
}

TEST_SUITE("pg") {
  TEST_CASE("a missing table: the diagnostics name it, and the hint names the migrate call for keel's own") {
    test::scratch_schema schema;
    auto c = schema.connect();
    auto missing = c.query("SELECT count(*) FROM keel_jobs");
    REQUIRE(!missing);
    CHECK(missing.error() == pg::errc::undefined_table);
    CHECK(std::string(missing.error().message()).find("migrate(c)") != std::string::npos);
    CHECK(c.last_error().table == "keel_jobs");
    CHECK(c.last_error().hint.find("keel::jobs::migrate(c)") != std::string::npos);
    CHECK(c.last_error().to_string().find("keel_jobs") != std::string::npos);

    auto own = c.query("SELECT * FROM my_orders");
    REQUIRE(!own);
    CHECK(c.last_error().table == "my_orders");
    CHECK(c.last_error().hint.empty());  // not keel's: no guess
  }
}
