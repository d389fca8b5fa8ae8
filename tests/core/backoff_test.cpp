#include <keel/core/backoff.hpp>

#include "support/random.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <limits>

using namespace std::chrono_literals;

TEST_SUITE("unit") {
  TEST_CASE("backoff doubles from initial up to max, exactly without jitter") {
    keel::backoff b({.initial = 10ms, .max = 100ms, .mode = keel::jitter_mode::none});
    CHECK(b.next() == 10ms);
    CHECK(b.next() == 20ms);
    CHECK(b.next() == 40ms);
    CHECK(b.next() == 80ms);
    CHECK(b.next() == 100ms);
    CHECK(b.next() == 100ms);
    CHECK(b.retries() == 6);
    b.reset();
    CHECK(b.next() == 10ms);
  }

  TEST_CASE("jitter stays inside its band; full jitter spans zero to the delay") {
    const keel::backoff_policy proportional{.initial = 1000ms, .max = 1h, .jitter = 0.25};
    CHECK(keel::backoff_delay(proportional, 1, 0.0) == 750ms);
    CHECK(keel::backoff_delay(proportional, 1, 0.5) == 1000ms);
    CHECK(keel::backoff_delay(proportional, 2, 1.0) == 2500ms);
    const keel::backoff_policy full{.initial = 1000ms, .max = 1h, .mode = keel::jitter_mode::full};
    CHECK(keel::backoff_delay(full, 3, 0.0) == 0ms);
    CHECK(keel::backoff_delay(full, 3, 0.5) == 2000ms);
    keel::backoff fixed(full, [] { return 0.25; });
    CHECK(fixed.next() == 250ms);
    CHECK(fixed.next() == 500ms);
  }

  TEST_CASE("extreme policies neither overflow nor spin: the largest cap, NaNs") {
    const keel::backoff_policy huge{
        .initial = 100ms, .max = std::chrono::milliseconds::max(), .mode = keel::jitter_mode::none};
    for (std::uint32_t retry : {1U, 57U, 64U, 1000U, UINT32_MAX}) {
      const auto d = keel::backoff_delay(huge, retry, 0.5);
      CHECK(d.count() > 0);
      CHECK(d.count() <= 18'400'000'000'000'000LL);
    }
    const keel::backoff_policy jittered{
        .initial = 100ms, .max = std::chrono::milliseconds::max(), .jitter = 1.0};
    CHECK(keel::backoff_delay(jittered, 200, 1.0).count() > 0);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const keel::backoff_policy nan_policy{.initial = 10ms, .max = 1s, .multiplier = nan, .jitter = nan};
    CHECK(keel::backoff_delay(nan_policy, 3, 0.5) == 40ms);
    CHECK(keel::backoff_delay({.initial = 10ms, .max = 1s, .mode = keel::jitter_mode::full}, 1, nan) == 5ms);
  }

  TEST_CASE("a zero initial delay stays zero however far the multiplier grows") {
    // Found by the property test below (KEEL_TEST_SEED=1224152314011272077): 0 * pow(...) =
    // 0 * infinity = NaN, which came back as INT64_MIN milliseconds.
    for (const auto mode :
         {keel::jitter_mode::none, keel::jitter_mode::proportional, keel::jitter_mode::full}) {
      const keel::backoff_policy zero{.initial = 0ms, .max = 1s, .multiplier = 1e6, .mode = mode};
      CHECK(keel::backoff_delay(zero, 4'000'000'000U, 0.5) == 0ms);
      CHECK(keel::backoff_delay(zero, 1, 0.5) == 0ms);
    }
  }

  TEST_CASE("backoff_delay never overflows, goes negative or passes the cap (property)") {
    auto& rng = keel::test::rng();
    for (int i = 0; i < 20000; ++i) {
      const keel::backoff_policy p{
          .initial = std::chrono::milliseconds(keel::test::uniform<std::int64_t>(-5, 1'000'000'000)),
          .max = std::chrono::milliseconds(keel::test::uniform<std::int64_t>(-5, 1'000'000'000'000)),
          .multiplier = std::uniform_real_distribution<double>(-1.0, 1e6)(rng),
          .mode = static_cast<keel::jitter_mode>(rng() % 3),
          .jitter = std::uniform_real_distribution<double>(-1.0, 2.0)(rng)};
      const auto retry = static_cast<std::uint32_t>(rng());
      const auto d = keel::backoff_delay(p, retry, std::uniform_real_distribution<double>(-0.5, 1.5)(rng));
      const double cap = static_cast<double>(std::max<std::int64_t>(p.max.count(), 0)) * 2.0;
      CHECK(d.count() >= 0);
      CHECK(static_cast<double>(d.count()) <= cap + 1.0);
    }
  }
}
