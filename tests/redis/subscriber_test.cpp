// Pub/sub against a real redis-server: messages published from another connection arrive,
// patterns carry what they matched, unsubscribing stops delivery, and a lost connection is
// reported.
#include <keel/redis.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <support/redis.hpp>
#include <support/result.hpp>

namespace redis = keel::redis;
using namespace std::chrono_literals;

namespace {

// What a subscriber's handlers saw, and a way to wait for it.
struct inbox {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<redis::message> messages;
  std::vector<keel::error_code> errors;

  redis::subscriber_handlers handlers() {
    return {.on_message =
                [this](const redis::message& m) {
                  std::lock_guard guard(mutex);
                  messages.push_back(m);
                  cv.notify_all();
                },
            .on_error =
                [this](keel::error_code ec) {
                  std::lock_guard guard(mutex);
                  errors.push_back(ec);
                  cv.notify_all();
                }};
  }
  bool wait_for_messages(std::size_t n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 10s, [&] { return messages.size() >= n; });
  }
  bool wait_for_error() {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 10s, [&] { return !errors.empty(); });
  }
};

std::int64_t publish(redis::client& c, std::string_view channel, std::string_view payload) {
  const auto r = c.command({"PUBLISH", channel, payload});
  REQUIRE(r);
  REQUIRE(r->type == redis::resp_value::kind::integer);
  return r->integer;  // how many subscribers received it
}

}  // namespace

TEST_SUITE("redis") {
  TEST_CASE("subscriber: a message published on another connection arrives, in order") {
    keel::test::redis_server server;
    inbox got;
    auto sub = redis::subscriber::connect({.port = server.port()}, got.handlers());
    REQUIRE(sub);
    REQUIRE(sub->subscribe({"news", "weather"}));
    CHECK(sub->subscriptions() == 2);
    redis::client publisher({.port = server.port()});
    // Subscribed once subscribe() returns: Redis counts this subscriber as a receiver.
    CHECK(publish(publisher, "news", "hello") == 1);
    const std::string binary("a\r\n\0b", 5);
    CHECK(publish(publisher, "weather", binary) == 1);
    CHECK(publish(publisher, "elsewhere", "nobody") == 0);
    REQUIRE(got.wait_for_messages(2));
    {
      std::lock_guard guard(got.mutex);
      CHECK(got.messages[0].channel == "news");
      CHECK(got.messages[0].payload == "hello");
      CHECK(got.messages[0].pattern.empty());
      CHECK(got.messages[1].payload == binary);
      got.messages.clear();
    }
    constexpr int many = 2000;
    std::string burst;
    for (int i = 0; i < many; ++i) redis::append_command(burst, {"PUBLISH", "news", std::to_string(i)});
    REQUIRE(publisher.pipeline(std::move(burst), many));
    REQUIRE(got.wait_for_messages(many));
    std::lock_guard guard(got.mutex);
    REQUIRE(got.messages.size() == many);
    for (int i = 0; i < many; ++i)
      REQUIRE(got.messages[static_cast<std::size_t>(i)].payload == std::to_string(i));
    CHECK(got.errors.empty());
  }

  TEST_CASE("subscriber: patterns carry what they matched; unsubscribing stops delivery") {
    keel::test::redis_server server;
    inbox got;
    auto sub = redis::subscriber::connect({.port = server.port()}, got.handlers());
    REQUIRE(sub);
    REQUIRE(sub->psubscribe({"news.*"}));
    REQUIRE(sub->subscribe({"news"}));
    CHECK(sub->subscriptions() == 2);
    redis::client publisher({.port = server.port()});
    CHECK(publish(publisher, "news.sport", "goal") == 1);
    CHECK(publish(publisher, "news", "plain") == 1);  // the pattern does not match "news" itself
    REQUIRE(got.wait_for_messages(2));
    {
      std::lock_guard guard(got.mutex);
      CHECK(got.messages[0].channel == "news.sport");
      CHECK(got.messages[0].pattern == "news.*");
      CHECK(got.messages[0].payload == "goal");
      CHECK(got.messages[1].channel == "news");
      CHECK(got.messages[1].pattern.empty());
    }
    REQUIRE(sub->unsubscribe({"news"}));
    CHECK(sub->subscriptions() == 1);
    CHECK(publish(publisher, "news", "gone") == 0);
    REQUIRE(sub->punsubscribe());  // every pattern
    CHECK(sub->subscriptions() == 0);
    CHECK(publish(publisher, "news.sport", "gone") == 0);
    // Unsubscribing from everything with nothing subscribed is confirmed too.
    REQUIRE(sub->unsubscribe());
    REQUIRE(sub->subscribe({"a", "b", "c"}));
    REQUIRE(sub->unsubscribe());
    CHECK(sub->subscriptions() == 0);
    CHECK(publish(publisher, "a", "gone") == 0);
    CHECK(sub->subscribe(std::span<const std::string_view>{}).error() == redis::errc::invalid_argument);
    CHECK(sub->healthy());
    std::lock_guard guard(got.mutex);
    CHECK(got.messages.size() == 2);  // nothing after the unsubscribes
  }

  TEST_CASE("subscriber: a lost connection is reported once and later calls fail") {
    keel::test::redis_server server;
    inbox got;
    auto sub = redis::subscriber::connect({.port = server.port()}, got.handlers());
    REQUIRE(sub);
    REQUIRE(sub->subscribe({"news"}));
    SUBCASE("Redis killed") {
      server.stop();
    }
    SUBCASE("the connection killed") {
      redis::client admin({.port = server.port()});
      CHECK(admin.command({"CLIENT", "KILL", "TYPE", "pubsub"})->integer == 1);
    }
    REQUIRE(got.wait_for_error());
    CHECK(got.errors.front() == redis::errc::connection_lost);
    CHECK_FALSE(sub->healthy());
    CHECK(sub->subscribe({"again"}).error() == redis::errc::closed);
    std::lock_guard guard(got.mutex);
    CHECK(got.errors.size() == 1);
  }

  TEST_CASE("subscriber: nothing listening, or AUTH refused, fails connect") {
    CHECK(redis::subscriber::connect({.port = keel::test::free_port()}, {}).error() ==
          redis::errc::unavailable);
    keel::test::redis_server server;  // no password set: AUTH is an error reply
    CHECK(redis::subscriber::connect({.port = server.port(), .password = "wrong"}, {}).error() ==
          redis::errc::server_error);
    CHECK(redis::connection::connect({.port = server.port(), .password = "wrong"}).error() ==
          redis::errc::server_error);
  }
}
