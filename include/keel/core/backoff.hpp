#pragma once
/// @file keel/core/backoff.hpp
/// @brief Exponential backoff with a cap and jitter, for retries and reconnects.
///
/// @code
/// keel::backoff retry({.initial = 50ms, .max = 5s});
/// while (!connect()) std::this_thread::sleep_for(retry.next());
/// retry.reset();                               // after a success
/// @endcode
/// The delay before retry `n` (1-based) is min(max, initial * multiplier^(n-1)), then jittered
/// so that many clients failing together do not retry together. The randomness is injectable,
/// so tests see exact delays.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>

namespace keel {

/// How a delay is spread.
enum class jitter_mode : std::uint8_t {
  none,          ///< exactly the exponential delay
  proportional,  ///< uniform in [d * (1 - jitter), d * (1 + jitter)]
  full,          ///< uniform in [0, d] ("full jitter"; spreads best, shortest on average)
};

/// A backoff schedule; designated initializers: `{.initial = 10ms, .max = 1s}`.
struct backoff_policy {
  std::chrono::milliseconds initial{100};
  std::chrono::milliseconds max{std::chrono::seconds(30)};
  double multiplier = 2.0;
  jitter_mode mode = jitter_mode::proportional;
  double jitter = 0.2;  ///< the spread for jitter_mode::proportional, in [0, 1]
};

/// The delay before retry `retry` (1-based; 0 counts as 1); `unit_random` in [0, 1) picks the
/// jitter. Never negative, never above `max * (1 + jitter)` nor about 584 years, whatever the
/// inputs (NaN multiplier or jitter count as the defaults, a NaN `unit_random` as 0.5).
[[nodiscard]] inline std::chrono::milliseconds backoff_delay(const backoff_policy& policy,
                                                             std::uint32_t retry,
                                                             double unit_random) noexcept {
  // No delay beyond about 292 years, so callers can add one to a nanosecond clock safely.
  constexpr double longest_ms = 9.2e15;
  const auto finite_or = [](double v, double fallback) { return std::isfinite(v) ? v : fallback; };
  const double initial =
      std::min(static_cast<double>(std::max<std::int64_t>(policy.initial.count(), 0)), longest_ms);
  const double cap = std::min(static_cast<double>(std::max<std::int64_t>(policy.max.count(), 0)), longest_ms);
  const double growth = std::max(finite_or(policy.multiplier, 2.0), 1.0);
  const double exponent = static_cast<double>(std::max<std::uint32_t>(retry, 1) - 1);
  // pow saturates to infinity for huge exponents; min() then takes the cap. A zero initial
  // delay stays zero (0 * infinity would be NaN, which min() and clamp() pass through).
  const double base = initial == 0.0 ? 0.0 : std::min(initial * std::pow(growth, exponent), cap);
  const double u = std::clamp(finite_or(unit_random, 0.5), 0.0, 1.0);
  double delay = base;
  switch (policy.mode) {
    case jitter_mode::none:
      break;
    case jitter_mode::proportional: {
      const double spread = std::clamp(finite_or(policy.jitter, 0.0), 0.0, 1.0);
      delay = base * (1.0 + spread * (2.0 * u - 1.0));
      break;
    }
    case jitter_mode::full:
      delay = base * u;
      break;
  }
  if (!(delay >= 0.0)) delay = 0.0;  // also NaN: llround(NaN) is undefined
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(std::min(delay, 2 * longest_ms))));
}

/// A running backoff: next() gives successive delays, reset() starts over after a success.
/// Not thread-safe; one per retry loop.
class backoff {
 public:
  /// Randomness from a generator seeded by the system.
  explicit backoff(backoff_policy policy)
      : policy_(policy), random_([engine = std::minstd_rand(std::random_device{}())]() mutable {
          return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
        }) {}
  /// Randomness from `unit_random`, which returns values in [0, 1) (tests pass a constant).
  backoff(backoff_policy policy, std::function<double()> unit_random)
      : policy_(policy), random_(std::move(unit_random)) {}

  /// The delay before the next retry, and counts it.
  [[nodiscard]] std::chrono::milliseconds next() {
    if (retries_ < UINT32_MAX) ++retries_;
    return backoff_delay(policy_, retries_, random_());
  }
  /// Starts the schedule over (after a success).
  void reset() noexcept { retries_ = 0; }
  /// Retries counted since the last reset.
  [[nodiscard]] std::uint32_t retries() const noexcept { return retries_; }
  [[nodiscard]] const backoff_policy& policy() const noexcept { return policy_; }

 private:
  backoff_policy policy_;
  std::function<double()> random_;
  std::uint32_t retries_ = 0;
};

}  // namespace keel
