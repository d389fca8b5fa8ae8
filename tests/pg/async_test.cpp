#include <keel/pg/async.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <doctest/doctest.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <support/pg.hpp>

using namespace keel;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {
// Collects listener events from the io thread for the test thread to wait on.
struct event_log {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<pg::listener_event> events;

  void push(const pg::listener_event& e) {
    std::lock_guard lock(mutex);
    events.push_back(e);
    changed.notify_all();
  }
  // Waits for the next event of `kind`, discarding others before it.
  std::optional<pg::listener_event> next(pg::listener_event::kind kind,
                                         std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      while (!events.empty()) {
        auto e = events.front();
        events.pop_front();
        if (e.what == kind) return e;
      }
      if (changed.wait_until(lock, deadline) == std::cv_status::timeout && events.empty())
        return std::nullopt;
    }
  }
};
}  // namespace

TEST_SUITE("pg") {
  TEST_CASE("async_query completes on the executor, with coroutines and callbacks") {
    test::scratch_schema schema;
    auto c = schema.connect();
    asio::io_context io;
    std::int64_t from_coroutine = 0;
    error_code failure;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto r = co_await pg::async_query(io.get_executor(), c, "SELECT $1::int8 * 2",
                                            pg::params(std::int64_t{21}), asio::use_awaitable);
          from_coroutine = r.value<std::int64_t>().value();
          try {
            (void)co_await pg::async_query(io.get_executor(), c, "SELECT * FROM missing", pg::params(),
                                           asio::use_awaitable);
          } catch (const keel::system_error& e) {
            failure = e.code();
          }
        },
        asio::detached);
    bool called_inline = true;
    bool callback_ran = false;
    auto other = schema.connect();  // one statement at a time per connection
    pg::async_query(io.get_executor(), other, "SELECT 1", pg::params(), [&](error_code ec, pg::rows) {
      CHECK_FALSE(called_inline);
      CHECK_FALSE(ec);
      callback_ran = true;
    });
    called_inline = false;
    io.run();
    CHECK(from_coroutine == 42);
    CHECK(failure == pg::errc::undefined_table);
    CHECK(callback_ran);
    CHECK(c.query("SELECT 7::int8").value().value<std::int64_t>().value() ==
          7);  // still usable synchronously
  }

  TEST_CASE("cancelling async_query cancels the statement on the server") {
    test::scratch_schema schema;
    auto c = schema.connect();
    asio::io_context io;
    asio::cancellation_signal cancel;
    error_code outcome;
    pg::async_query(
        io.get_executor(), c, "SELECT pg_sleep(30)", pg::params(),
        asio::bind_cancellation_slot(cancel.slot(), [&](error_code ec, pg::rows) { outcome = ec; }));
    asio::steady_timer timer(io, 200ms);
    timer.async_wait([&](error_code) { cancel.emit(asio::cancellation_type::terminal); });
    const auto started = std::chrono::steady_clock::now();
    io.run();
    CHECK(outcome == pg::errc::query_canceled);
    CHECK(std::chrono::steady_clock::now() - started < 10s);
  }

  TEST_CASE("the listener delivers notifications, reconnects after losing its backend, and reports the gap") {
    test::scratch_schema schema;
    asio::io_context io;
    auto guard = asio::make_work_guard(io);
    event_log log;
    pg::listener listener(
        io.get_executor(),
        {.conninfo = schema.conninfo, .channels = {"jobs", "odd channel"}, .health_check_interval = 200ms},
        [&](const pg::listener_event& e) { log.push(e); });
    listener.start();
    std::thread runner([&] { io.run(); });

    REQUIRE(log.next(pg::listener_event::kind::connected));
    auto sender = schema.connect();
    REQUIRE(sender.notify("jobs", "job 1"));
    REQUIRE(sender.notify("odd channel", "spaces are fine"));
    auto first = log.next(pg::listener_event::kind::notification);
    REQUIRE(first);
    CHECK(first->message.channel == "jobs");
    CHECK(first->message.payload == "job 1");
    CHECK(first->message.sender_pid == sender.backend_pid());
    auto second = log.next(pg::listener_event::kind::notification);
    REQUIRE(second);
    CHECK(second->message.channel == "odd channel");

    // Kill the listener's backend: it must notice, reconnect, LISTEN again and say so.
    REQUIRE(sender.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                         "keel-listener"));
    REQUIRE(log.next(pg::listener_event::kind::disconnected));
    REQUIRE(log.next(pg::listener_event::kind::reconnected));
    CHECK(listener.reconnects() == 1);
    REQUIRE(sender.notify("jobs", "job 2"));
    auto after = log.next(pg::listener_event::kind::notification);
    REQUIRE(after);
    CHECK(after->message.payload == "job 2");

    listener.stop();
    guard.reset();
    runner.join();
  }

  TEST_CASE("the listener survives a server restart") {
    auto* cluster = test::cluster();
    if (cluster == nullptr) {
      MESSAGE("skipped: needs the private cluster (KEEL_DATABASE_URL is set)");
      return;
    }
    test::scratch_schema schema;
    asio::io_context io;
    auto guard = asio::make_work_guard(io);
    event_log log;
    pg::listener listener(io.get_executor(),
                          {.conninfo = schema.conninfo, .channels = {"jobs"}, .health_check_interval = 200ms},
                          [&](const pg::listener_event& e) { log.push(e); });
    listener.start();
    std::thread runner([&] { io.run(); });
    REQUIRE(log.next(pg::listener_event::kind::connected));
    REQUIRE(cluster->restart());
    REQUIRE(log.next(pg::listener_event::kind::reconnected, 20s));
    auto sender = schema.connect();
    REQUIRE(sender.notify("jobs", "after restart"));
    auto note = log.next(pg::listener_event::kind::notification);
    REQUIRE(note);
    CHECK(note->message.payload == "after restart");
    listener.stop();
    guard.reset();
    runner.join();
  }
}
