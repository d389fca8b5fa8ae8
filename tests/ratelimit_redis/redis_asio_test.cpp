// keel::ratelimit::async_decide with Asio completion tokens against a real redis-server:
// use_future, deferred, use_awaitable, plain and executor-bound callbacks, and the error path
// (Redis killed: every token gets the error, nothing hangs).
#include <keel/ratelimit_redis/redis_asio.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include <support/redis.hpp>

namespace asio = boost::asio;
namespace rl = keel::ratelimit;
using namespace std::chrono_literals;

namespace {

// The error a use_future future carries (empty when it holds a value).
keel::error_code error_of(std::future<void>& f) {
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  try {
    f.get();
    return {};
  } catch (const boost::system::system_error& e) {
    return e.code();
  }
}

}  // namespace

TEST_SUITE("redis") {
  TEST_CASE("redis backend: async_decide takes any Asio completion token") {
    keel::test::redis_server server;
    // Declared before the backend so that it outlives the backend's I/O thread, which may still
    // be returning from posting a completion to it when the test's last handler has run.
    asio::io_context io;
    rl::redis_backend store({.port = server.port(), .max_connections = 2});
    const rl::limit l{.algorithm = rl::algorithm::gcra, .count = 4, .period = 1h};
    rl::decision d;

    SUBCASE("use_future") {
      const rl::keyed_limit k{"token:future", &l};
      for (std::uint64_t i = 0; i < 5; ++i) {
        auto f = rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::use_future);
        CHECK_FALSE(error_of(f));
        CHECK(d.allowed == (i < 4));
        CHECK(d.remaining == (i < 4 ? 3 - i : 0));
      }
      auto too_costly = rl::async_decide(store, {&k, 1}, 9, {&d, 1}, asio::use_future);
      CHECK(error_of(too_costly) == rl::errc::cost_exceeds_burst);
    }

    SUBCASE("deferred: nothing is sent until the operation is started") {
      const rl::limit one{.algorithm = rl::algorithm::gcra, .count = 1, .period = 1h};
      const rl::keyed_limit k{"token:deferred", &one};
      auto later = rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::deferred);
      rl::decision first;
      REQUIRE(store.decide({&k, 1}, 1, {&first, 1}));
      CHECK(first.allowed);  // the deferred operation has not spent the only unit
      auto f = std::move(later)(asio::use_future);
      CHECK_FALSE(error_of(f));
      CHECK_FALSE(d.allowed);
      CHECK(d.retry_after > 59min);
    }

    SUBCASE("use_awaitable: a coroutine resumes on its own executor") {
      const auto io_thread = std::this_thread::get_id();
      int allowed = 0;
      bool on_own_thread = true;
      keel::error_code last;
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            const rl::keyed_limit k{"token:coroutine", &l};
            rl::decision x;
            for (int i = 0; i < 6; ++i) {
              co_await rl::async_decide(store, {&k, 1}, 1, {&x, 1}, asio::use_awaitable);
              on_own_thread = on_own_thread && std::this_thread::get_id() == io_thread;
              allowed += x.allowed ? 1 : 0;
            }
            auto [ec] =
                co_await rl::async_decide(store, {&k, 1}, 100, {&x, 1}, asio::as_tuple(asio::use_awaitable));
            last = ec;
          },
          asio::detached);
      io.run_for(10s);
      CHECK(allowed == 4);
      CHECK(on_own_thread);
      CHECK(last == rl::errc::cost_exceeds_burst);
    }

    SUBCASE("callbacks: plain on the backend's thread, bound to an executor on it") {
      const rl::keyed_limit k{"token:callback", &l};
      std::promise<std::thread::id> plain;
      rl::async_decide(store, {&k, 1}, 1, {&d, 1}, [&](keel::error_code ec) {
        plain.set_value(ec ? std::thread::id{} : std::this_thread::get_id());
      });
      auto ran_on = plain.get_future();
      REQUIRE(ran_on.wait_for(10s) == std::future_status::ready);
      const auto backend_thread = ran_on.get();
      CHECK(backend_thread != std::thread::id{});
      CHECK(backend_thread != std::this_thread::get_id());
      CHECK(d.allowed);

      std::thread::id bound_on;
      rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::bind_executor(io, [&](keel::error_code ec) {
                         CHECK_FALSE(ec);
                         bound_on = std::this_thread::get_id();
                       }));
      // The work guard keeps run() waiting for the answer instead of returning at once.
      io.run_for(10s);
      CHECK(bound_on == std::this_thread::get_id());
      CHECK(d.remaining == 2);
    }
  }

  TEST_CASE("redis backend: async_decide delivers the error when Redis is killed, never hangs") {
    keel::test::redis_server server;
    asio::io_context io;  // outlives the backend's thread, as above
    rl::redis_backend store({.port = server.port(), .max_connections = 2, .command_timeout = 500ms});
    const rl::limit l{.algorithm = rl::algorithm::sliding_window, .count = 1'000'000, .period = 1h};
    const rl::keyed_limit k{"token:killed", &l};
    rl::decision d;
    auto warm = rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::use_future);
    REQUIRE_FALSE(error_of(warm));

    // Many requests in flight while the server dies: each one completes, with an error or (if
    // it was answered before the kill) a decision.
    std::vector<rl::decision> out(200);
    std::vector<std::future<void>> futures;
    for (auto& o : out) futures.push_back(rl::async_decide(store, {&k, 1}, 1, {&o, 1}, asio::use_future));
    server.stop();
    int errors = 0;
    for (auto& f : futures) errors += error_of(f) ? 1 : 0;

    // Once it is gone every request fails promptly: refused, not timed out.
    auto after = rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::use_future);
    CHECK(error_of(after) == rl::errc::backend_unavailable);

    keel::error_code in_coroutine;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          auto [ec] =
              co_await rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::as_tuple(asio::use_awaitable));
          in_coroutine = ec;
        },
        asio::detached);
    io.run_for(10s);
    CHECK(in_coroutine == rl::errc::backend_unavailable);
    MESSAGE(errors << " of 200 requests in flight at the kill failed");

    // And it recovers without a restart of the backend.
    server.start();
    // Redis answers PING again; the next decision may still meet a connection it killed.
    keel::error_code recovered = rl::errc::backend_unavailable;
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (recovered && std::chrono::steady_clock::now() < give_up) {
      auto f = rl::async_decide(store, {&k, 1}, 1, {&d, 1}, asio::use_future);
      recovered = error_of(f);
    }
    CHECK_FALSE(recovered);
  }
}
