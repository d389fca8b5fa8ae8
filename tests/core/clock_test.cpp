#include <keel/core/clock.hpp>

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
