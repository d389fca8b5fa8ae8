#include <keel/core/clock.hpp>
#include <keel/core/time_text.hpp>

#include <doctest/doctest.h>

#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {
// Code under test takes a clock; this is the shape every component uses.
bool expired(const keel::clock& clock, keel::monotonic_time deadline) {
  return clock.monotonic() >= deadline;
}
}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("manual clock moves only when told") {
    keel::manual_clock clock(keel::timestamp{1'700'000'000s});
    const auto start = clock.monotonic();
    CHECK(clock.now().time_since_epoch() == 1'700'000'000s);
    CHECK_FALSE(expired(clock, start + 5s));
    clock.advance(5s);
    CHECK(expired(clock, start + 5s));
    CHECK(clock.now().time_since_epoch() == 1'700'000'005s);

    clock.set(keel::timestamp{1'600'000'000s});  // wall time may jump back
    CHECK(clock.now().time_since_epoch() == 1'600'000'000s);
    CHECK(clock.monotonic() == start + 5s);  // monotonic never does
  }

  TEST_CASE("manual clock is safe to advance from several threads") {
    keel::manual_clock clock;
    const auto start = clock.monotonic();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < 1000; ++i) clock.advance(1ms);
      });
    }
    for (auto& t : threads) t.join();
    CHECK(clock.monotonic() - start == 4000ms);
  }

  TEST_CASE("system clock follows the operating system") {
    const keel::clock& clock = keel::system_clock::instance();
    const auto before = std::chrono::system_clock::now();
    const auto now = clock.now();
    CHECK(now >= std::chrono::time_point_cast<std::chrono::nanoseconds>(before));
    const auto a = clock.monotonic();
    const auto b = clock.monotonic();
    CHECK(b >= a);
  }
}

TEST_SUITE("unit") {
  TEST_CASE("format_utc: RFC 3339 in UTC with microseconds, finer digits cut, before 1970 too") {
    using namespace std::chrono;
    const keel::timestamp t{seconds(1'796'412'749) + nanoseconds(123'456'789)};
    CHECK(keel::format_utc(t) == "2026-12-04T19:32:29.123456Z");
    CHECK(keel::format_utc(keel::timestamp{}) == "1970-01-01T00:00:00.000000Z");
    CHECK(keel::format_utc(keel::timestamp{-microseconds(1)}) == "1969-12-31T23:59:59.999999Z");
    std::string line = "at ";
    keel::append_utc(line, t);
    CHECK(line == "at 2026-12-04T19:32:29.123456Z");
  }
}
