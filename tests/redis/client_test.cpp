// The blocking connection and the pipelined client against a real redis-server: commands,
// pipelining, scripts after SCRIPT FLUSH, Asio completion tokens, and connections lost.
#include <keel/redis.hpp>
#include <keel/redis/async.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <support/redis.hpp>
#include <support/result.hpp>

namespace redis = keel::redis;
using namespace std::chrono_literals;

namespace {

// Counts completions of async requests and waits for all of them.
struct completions {
  std::mutex mutex;
  std::condition_variable cv;
  int finished = 0;
  std::vector<keel::error_code> errors;
  std::vector<std::int64_t> integers;

  redis::client::reply_handler handler() {
    return [this](keel::error_code ec, std::vector<redis::resp_value> r) {
      std::lock_guard guard(mutex);
      if (ec) {
        errors.push_back(ec);
      } else {
        for (const auto& v : r) integers.push_back(v.integer);
      }
      ++finished;
      cv.notify_all();
    };
  }
  bool wait_for(int n, std::chrono::seconds limit = 30s) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, limit, [&] { return finished == n; });
  }
  bool wait_until_in_flight_below(int submitted, int window) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 30s, [&] { return submitted - finished < window; });
  }
};

std::string incr(std::string_view key) {
  std::string encoded;
  redis::append_command(encoded, {"INCR", key});
  return encoded;
}

}  // namespace

TEST_SUITE("redis") {
  TEST_CASE("connection and client: commands, error replies as values, nulls, binary values") {
    keel::test::redis_server server;
    auto c = redis::connection::connect({.port = server.port()});
    REQUIRE(c);
    const std::string binary("a\r\n\0b", 5);
    CHECK(c->command({"SET", "k", binary})->text == "OK");
    CHECK(c->command({"GET", "k"})->text == binary);
    CHECK(c->command({"GET", "missing"})->is_null());
    const auto wrong = c->command({"INCR", "k"});
    REQUIRE(wrong);
    CHECK(wrong->is_error());  // Redis's answer, not a failure of the call
    CHECK(c->healthy());

    redis::client client({.port = server.port()});
    CHECK(client.command({"GET", "k"})->text == binary);
    CHECK(client.command({"INCR", "n"})->integer == 1);
    const auto listed = client.command({"RPUSH", "list", "x", "y"});
    CHECK(listed->integer == 2);
    const auto range = client.command({"LRANGE", "list", "0", "-1"});
    REQUIRE(range->elements.size() == 2);
    CHECK(range->elements[1].text == "y");
  }

  TEST_CASE("client: a pipeline is answered in order; many callers share one connection exactly") {
    keel::test::redis_server server;
    redis::client client({.port = server.port(), .max_connections = 1, .command_timeout = 5s});
    std::string encoded;
    redis::append_command(encoded, {"SET", "p", "1"});
    redis::append_command(encoded, {"INCRBY", "p", "41"});
    redis::append_command(encoded, {"GET", "p"});
    redis::append_command(encoded, {"HGET", "p", "f"});  // wrong type: an error value in its place
    const auto replies = client.pipeline(std::move(encoded), 4);
    REQUIRE(replies);
    REQUIRE(replies->size() == 4);
    CHECK((*replies)[0].text == "OK");
    CHECK((*replies)[1].integer == 42);
    CHECK((*replies)[2].text == "42");
    CHECK((*replies)[3].is_error());

    // 4 threads × 5000 INCRs, all in flight on the one connection: every reply is matched to
    // its own request, so the counts seen are exactly 1..20000, each once.
    constexpr int threads = 4;
    constexpr int per_thread = 5000;
    completions done;
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&] {
        for (int i = 0; i < per_thread; ++i) client.submit(incr("counter"), 1, done.handler());
      });
    }
    for (auto& t : callers) t.join();
    REQUIRE(done.wait_for(threads * per_thread));
    CHECK(done.errors.empty());
    std::sort(done.integers.begin(), done.integers.end());
    REQUIRE(done.integers.size() == threads * per_thread);
    for (std::size_t i = 0; i < done.integers.size(); ++i)
      REQUIRE(done.integers[i] == static_cast<std::int64_t>(i + 1));
    const auto clients = client.command({"CLIENT", "LIST"});
    REQUIRE(clients);
    CHECK(std::count(clients->text.begin(), clients->text.end(), '\n') == 1);  // this client's one connection
  }

  TEST_CASE("script: EVALSHA, and after SCRIPT FLUSH loaded again, each call run exactly once") {
    keel::test::redis_server server;
    const redis::script bump("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    const std::string_view keys[] = {"s"};
    const std::string_view one[] = {"1"};
    auto c = redis::connection::connect({.port = server.port()});
    REQUIRE(c);
    CHECK(bump.run(*c, keys, one)->integer == 1);  // never loaded: NOSCRIPT, loaded, run
    CHECK(c->command({"SCRIPT", "EXISTS", bump.sha1()})->elements.at(0).integer == 1);
    CHECK(bump.run(*c, keys, one)->integer == 2);
    REQUIRE(c->command({"SCRIPT", "FLUSH"})->text == "OK");
    CHECK(bump.run(*c, keys, one)->integer == 3);

    redis::client client({.port = server.port(), .max_connections = 2});
    REQUIRE(client.command({"SCRIPT", "FLUSH"})->text == "OK");
    const auto after_flush = bump.run(client, keys, one);
    REQUIRE(after_flush);
    INFO(after_flush->text);
    CHECK(after_flush->integer == 4);
    // A batch of calls, all answered NOSCRIPT: every one runs after the load, none twice.
    REQUIRE(client.command({"SCRIPT", "FLUSH"})->text == "OK");
    std::string batch;
    for (int i = 0; i < 10; ++i) bump.append_call(batch, keys, one);
    completions done;
    client.submit_script(bump, std::move(batch), 10, done.handler());
    REQUIRE(done.wait_for(1));
    CHECK(done.errors.empty());
    CHECK(done.integers == std::vector<std::int64_t>{5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
    CHECK(client.command({"GET", "s"})->text == "14");
    // A script error is the script's answer, a value.
    const redis::script broken("return redis.call('NOSUCHCOMMAND')");
    const auto failed = broken.run(client, {}, {});
    REQUIRE(failed);
    CHECK(failed->is_error());
  }

  // Redis can lose the script in the middle of a batch (a SCRIPT FLUSH from another client, a
  // failover): the calls before it ran and must not run again, the ones after it did not run.
  TEST_CASE("script: a batch answered NOSCRIPT only in part resends only those calls") {
    keel::test::redis_server server;
    const redis::script bump("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    const std::string_view keys[] = {"p"};
    const std::string_view one[] = {"1"};
    redis::client client({.port = server.port(), .max_connections = 1});
    REQUIRE(bump.run(client, keys, one)->integer == 1);  // loaded
    std::string batch;
    for (int i = 0; i < 3; ++i) bump.append_call(batch, keys, one);
    redis::append_command(batch, {"SCRIPT", "FLUSH"});  // lost here, as if by another client
    for (int i = 0; i < 3; ++i) bump.append_call(batch, keys, one);
    completions done;
    client.submit_script(bump, std::move(batch), 7, done.handler());
    REQUIRE(done.wait_for(1));
    CHECK(done.errors.empty());
    // The FLUSH's OK is no integer; the counts are each call's own, in order.
    CHECK(done.integers == std::vector<std::int64_t>{2, 3, 4, 0, 5, 6, 7});
    CHECK(client.command({"GET", "p"})->text == "7");
  }

  TEST_CASE("async: any completion token — future, deferred, coroutine") {
    keel::test::redis_server server;
    redis::client client({.port = server.port()});
    const std::string_view set[] = {"SET", "a", "1"};
    auto future = redis::async_command(client, set, boost::asio::use_future);
    CHECK(future.get().text == "OK");

    std::string encoded;
    redis::append_command(encoded, {"INCR", "a"});
    redis::append_command(encoded, {"INCR", "a"});
    auto deferred = redis::async_pipeline(client, std::move(encoded), 2, boost::asio::deferred);
    std::promise<std::vector<std::int64_t>> seen;
    std::move(deferred)([&](keel::error_code ec, std::vector<redis::resp_value> r) {
      std::vector<std::int64_t> counts;
      for (const auto& v : r) counts.push_back(ec ? -1 : v.integer);
      seen.set_value(std::move(counts));
    });
    CHECK(seen.get_future().get() == std::vector<std::int64_t>{2, 3});
    boost::asio::io_context io;
    bool coroutine_done = false;
    boost::asio::co_spawn(
        io,
        [&]() -> boost::asio::awaitable<void> {
          const std::string_view get[] = {"GET", "a"};
          const auto v = co_await redis::async_command(client, get, boost::asio::use_awaitable);
          CHECK(v.text == "3");
          try {
            co_await redis::async_command(client, std::span<const std::string_view>{},
                                          boost::asio::use_awaitable);
          } catch (const boost::system::system_error& e) {
            coroutine_done =
                e.code() == redis::errc::invalid_argument;  // an error, thrown by the coroutine token
          }
        },
        boost::asio::detached);
    io.run();
    CHECK(coroutine_done);
  }

  // The client's I/O thread hands each completion to the handler's executor. It must keep that
  // executor's context busy until it has left the context's post, or the caller's run() returns
  // and destroys the context while the I/O thread still signals its condition variable (a use
  // after free that ThreadSanitizer reports as a race on pthread_cond_destroy).
  TEST_CASE("async: the handler's io_context may be destroyed as soon as its run() returns") {
    keel::test::redis_server server;
    redis::client client({.port = server.port()});
    REQUIRE(client.command({"SET", "n", "7"}));
    const std::string_view get[] = {"GET", "n"};
    int answered = 0;
    for (int round = 0; round < 1000; ++round) {
      boost::asio::io_context io;
      std::string value;
      redis::async_command(client, get,
                           boost::asio::bind_executor(io, [&](keel::error_code ec, redis::resp_value v) {
                             if (!ec) value = v.text;
                           }));
      io.run();  // returns once the handler ran and the client let go of the context
      answered += value == "7" ? 1 : 0;
    }
    CHECK(answered == 1000);
  }

  TEST_CASE("client: Redis killed is an error, never a hang; it reconnects when Redis is back") {
    keel::test::redis_server server;
    redis::client client({.port = server.port(), .connect_timeout = 200ms, .command_timeout = 500ms});
    REQUIRE(client.command({"SET", "k", "v"}));
    server.stop();
    const auto lost = client.command({"GET", "k"});
    REQUIRE_FALSE(lost);
    // Refused, or written to the dying connection: either way an error naming what happened.
    CHECK((lost.error() == redis::errc::unavailable || lost.error() == redis::errc::connection_lost));
    CHECK(client.command({"GET", "k"}).error() == redis::errc::unavailable);
    auto c = redis::connection::connect({.port = server.port(), .connect_timeout = 200ms});
    CHECK(c.error() == redis::errc::unavailable);
    server.start();
    const auto back = client.command({"GET", "k"});
    REQUIRE(back);
    CHECK(back->is_null());  // restarted empty
  }

  TEST_CASE("client: a request written to a killed connection fails and is never sent again") {
    keel::test::redis_server server;
    redis::client client({.port = server.port(), .max_connections = 2, .command_timeout = 5s});
    auto admin = redis::connection::connect({.port = server.port()});
    REQUIRE(admin);
    constexpr int requests = 20'000;
    constexpr int window = 256;
    completions done;
    std::int64_t killed = 0;
    for (int i = 0; i < requests; ++i) {
      REQUIRE(done.wait_until_in_flight_below(i, window));
      client.submit(incr("once"), 1, done.handler());
      if (i % 2000 == 1000) {
        auto reply = admin->command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
        REQUIRE(reply);
        killed += reply->integer;
      }
    }
    REQUIRE(done.wait_for(requests));
    CHECK(killed >= 5);
    const auto succeeded = static_cast<std::int64_t>(done.integers.size());
    const auto failed = static_cast<std::int64_t>(done.errors.size());
    CHECK(succeeded + failed == requests);
    CHECK(failed <= 10 * window);  // only what was in flight at a kill fails; the rest went out again
    for (const auto& e : done.errors) CHECK(e == redis::errc::connection_lost);
    // Every successful reply is a different count: nothing ran twice and answered twice ...
    std::set<std::int64_t> distinct(done.integers.begin(), done.integers.end());
    CHECK(static_cast<std::int64_t>(distinct.size()) == succeeded);
    // ... and Redis counted each success once and each failure at most once: never resent.
    const auto counted = std::stoll(admin->command({"GET", "once"})->text);
    CHECK(counted >= succeeded);
    CHECK(counted <= succeeded + failed);
    MESSAGE(failed << " of " << requests << " requests were in flight at a kill and failed");
  }
}
