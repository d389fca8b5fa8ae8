// RESP2 parsing and encoding, and the blocking connection and the client against servers that
// misbehave (unit: no Redis needed).
#include <keel/redis.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <support/fake_server.hpp>
#include <support/redis.hpp>
#include <support/result.hpp>

namespace redis = keel::redis;
using namespace std::chrono_literals;

namespace {

keel::result<redis::resp_value> ask(std::uint16_t port, std::chrono::milliseconds timeout = 300ms) {
  auto c = redis::connection::connect({.port = port, .command_timeout = timeout});
  if (!c) return c.error();
  return c->command({"GET", "k"});
}

redis::resp_parser::status parse_all(std::string_view data, redis::resp_value& v) {
  std::size_t used = 0;
  const auto s = redis::resp_parser::parse(data, used, v);
  if (s == redis::resp_parser::status::complete) CHECK(used == data.size());
  return s;
}

std::string nested_arrays(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "*1\r\n";
  return s + ":1\r\n";
}

// One request on a client, waited for.
keel::result<std::vector<redis::resp_value>> submit_and_wait(redis::client& c, std::string encoded,
                                                             std::size_t replies) {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  keel::error_code error;
  std::vector<redis::resp_value> got;
  c.submit(std::move(encoded), replies, [&](keel::error_code ec, std::vector<redis::resp_value> r) {
    std::lock_guard guard(mutex);
    error = ec;
    got = std::move(r);
    done = true;
    cv.notify_one();
  });
  std::unique_lock lock(mutex);
  REQUIRE(cv.wait_for(lock, 10s, [&] { return done; }));
  if (error) return error;
  return got;
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("resp: every value type, in one piece and split at every byte") {
    const std::string stream =
        "+OK\r\n-ERR bad\r\n:-42\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n+x\r\n";
    std::vector<redis::resp_value> values;
    std::size_t at = 0;
    while (at < stream.size()) {
      redis::resp_value v;
      std::size_t used = 0;
      REQUIRE(redis::resp_parser::parse(std::string_view(stream).substr(at), used, v) ==
              redis::resp_parser::status::complete);
      values.push_back(std::move(v));
      at += used;
    }
    REQUIRE(values.size() == 7);
    CHECK(values[0].text == "OK");
    CHECK(values[1].is_error());
    CHECK(values[2].integer == -42);
    CHECK(values[3].text == "he\r\no");  // binary-safe
    CHECK(values[4].type == redis::resp_value::kind::null);
    CHECK(values[5].type == redis::resp_value::kind::null);
    REQUIRE(values[6].elements.size() == 3);
    CHECK(values[6].elements[1].elements[0].text.empty());
    // Every proper prefix of a value is incomplete, never malformed or complete.
    const std::string one = "*3\r\n:1\r\n*1\r\n$0\r\n\r\n+x\r\n";
    for (std::size_t cut = 0; cut < one.size(); ++cut) {
      redis::resp_value v;
      std::size_t used = 0;
      CHECK(redis::resp_parser::parse(std::string_view(one).substr(0, cut), used, v) ==
            redis::resp_parser::status::incomplete);
    }
  }

  TEST_CASE("resp: malformed input is rejected") {
    for (const std::string bad :
         {"?what\r\n", ":12x\r\n", ":\r\n", "$abc\r\n", "$-2\r\n", "$3\r\nabcd\r\n", "*-5\r\n", "+OK\n",
          "+O\rK\r\n", "*1\r\n!\r\n", "$99999999999\r\n", ":+1\r\n",
          "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"}) {
      redis::resp_value v;
      std::size_t used = 0;
      CHECK_MESSAGE(redis::resp_parser::parse(bad, used, v) == redis::resp_parser::status::malformed, bad);
    }
  }

  TEST_CASE("connection: bad, partial, slow and vanishing servers") {
    {
      keel::test::fake_server s("$5\r\nhello\r\n", 1, true);  // a valid reply trickling in byte by byte
      const auto r = ask(s.port(), 2s);
      REQUIRE(r);
      CHECK(r->text == "hello");
    }
    {
      keel::test::fake_server s("%garbage\r\n", 64, true);
      CHECK(ask(s.port()).error() == redis::errc::protocol_error);
    }
    {
      keel::test::fake_server s("$10\r\nhal", 64, true);  // closed in the middle of a reply
      CHECK(ask(s.port()).error() == redis::errc::protocol_error);
    }
    {
      keel::test::fake_server s("*2\r\n:1\r\n", 64, false);  // half a reply, then silence
      CHECK(ask(s.port(), 200ms).error() == redis::errc::timeout);
    }
    {
      keel::test::fake_server s("", 64, true);  // accepts, reads, hangs up: the command may have run
      CHECK(ask(s.port()).error() == redis::errc::connection_lost);
    }
    // Nothing listening at all.
    CHECK(ask(keel::test::free_port()).error() == redis::errc::unavailable);
  }

  TEST_CASE("resp: the bounds on nesting, bulk length and array length are exact") {
    redis::resp_value v;
    CHECK(parse_all(nested_arrays(redis::resp_parser::max_depth), v) == redis::resp_parser::status::complete);
    CHECK(parse_all(nested_arrays(redis::resp_parser::max_depth + 1), v) ==
          redis::resp_parser::status::malformed);
    // The largest bulk string is announced and waited for; one byte more is refused at once.
    const auto largest = std::to_string(redis::resp_parser::max_bulk_bytes);
    CHECK(parse_all("$" + largest + "\r\n", v) == redis::resp_parser::status::incomplete);
    const auto too_large = std::to_string(redis::resp_parser::max_bulk_bytes + 1);
    CHECK(parse_all("$" + too_large + "\r\n", v) == redis::resp_parser::status::malformed);
    const auto most = std::to_string(redis::resp_parser::max_array_elements);
    CHECK(parse_all("*" + most + "\r\n", v) == redis::resp_parser::status::incomplete);
    const auto too_many = std::to_string(redis::resp_parser::max_array_elements + 1);
    CHECK(parse_all("*" + too_many + "\r\n", v) == redis::resp_parser::status::malformed);
    // A length that overflows 64 bits is malformed, not wrapped around.
    CHECK(parse_all("$99999999999999999999999\r\n", v) == redis::resp_parser::status::malformed);
    CHECK(parse_all("*-1\r\n", v) == redis::resp_parser::status::complete);
    CHECK(v.is_null());
  }

  TEST_CASE("resp: commands are encoded as arrays of bulk strings, binary-safe") {
    std::string out;
    redis::append_command(out, {"SET", "k", std::string_view("a\r\n\0b", 5)});
    CHECK(out == std::string("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\n\0b\r\n", 31));
    redis::resp_value v;
    REQUIRE(parse_all(out, v) == redis::resp_parser::status::complete);
    REQUIRE(v.elements.size() == 3);
    CHECK(v.elements[2].text == std::string_view("a\r\n\0b", 5));
    std::string numbers;
    redis::append_array_header(numbers, 2);
    redis::append_bulk(numbers, std::int64_t{-9'223'372'036'854'775'807LL - 1});
    redis::append_bulk(numbers, std::int64_t{0});
    CHECK(numbers == "*2\r\n$20\r\n-9223372036854775808\r\n$1\r\n0\r\n");
    CHECK(redis::script("return 1").sha1() == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
  }

  TEST_CASE("connection and client: an empty command is refused before anything is sent") {
    redis::client c({.port = keel::test::free_port()});
    CHECK(c.command(std::span<const std::string_view>{}).error() == redis::errc::invalid_argument);
    const auto none = submit_and_wait(c, "", 0);
    REQUIRE(none);
    CHECK(none->empty());
  }

  TEST_CASE("client: malformed, cut-off and silent servers are errors, and every request completes") {
    const std::pair<std::string, std::pair<bool, redis::errc>> cases[] = {
        {"%3\r\n", {true, redis::errc::protocol_error}},     // RESP3, not RESP2
        {"$5\r\nhel", {true, redis::errc::protocol_error}},  // closed mid-reply
        {"", {true, redis::errc::connection_lost}},          // read the command, hung up
        {"*2\r\n:1\r\n", {false, redis::errc::timeout}},     // half a reply, then silence
    };
    for (const auto& one_case : cases) {
      const std::string& reply = one_case.first;
      const auto& expected = one_case.second;
      INFO(reply);
      keel::test::fake_server s(reply, 64, expected.first);
      redis::client c({.port = s.port(), .max_connections = 1, .command_timeout = 300ms});
      const auto r = c.command({"GET", "k"});
      REQUIRE_FALSE(r);
      CHECK(r.error() == expected.second);
    }
    redis::client nobody({.port = keel::test::free_port()});
    CHECK(nobody.command({"PING"}).error() == redis::errc::unavailable);
  }
}
