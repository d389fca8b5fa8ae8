#pragma once
/// @file keel/core/clock.hpp
/// @brief An injectable clock: components take a `const clock&` so tests can drive time.
#include <atomic>
#include <cassert>
#include <chrono>
#include <cstdint>

namespace keel {

/// Wall-clock time as nanoseconds since the Unix epoch (UTC).
using timestamp = std::chrono::sys_time<std::chrono::nanoseconds>;
/// Monotonic time, for durations, deadlines and rate limits.
using monotonic_time = std::chrono::steady_clock::time_point;

/// A source of time. Implementations are thread-safe.
class clock {
 public:
  virtual ~clock() = default;
  /// Wall-clock time, for timestamps that are stored or shown. May jump.
  [[nodiscard]] virtual timestamp now() const noexcept = 0;
  /// Monotonic time, for measuring intervals. Never goes backwards.
  [[nodiscard]] virtual monotonic_time monotonic() const noexcept = 0;

 protected:
  clock() = default;
  clock(const clock&) = default;
  clock& operator=(const clock&) = default;
};

/// The operating system's clocks.
class system_clock final : public clock {
 public:
  [[nodiscard]] timestamp now() const noexcept override;
  [[nodiscard]] monotonic_time monotonic() const noexcept override;
  /// The process-wide instance, the default wherever a clock is optional.
  [[nodiscard]] static const system_clock& instance() noexcept;
};

/// A clock that moves only when told to; both readings advance together.
class manual_clock final : public clock {
 public:
  /// Starts at `start` on the wall clock and at an arbitrary fixed point on the monotonic one.
  explicit manual_clock(timestamp start = timestamp{std::chrono::seconds(1'700'000'000)}) noexcept
      : wall_ns_(start.time_since_epoch().count()) {}

  [[nodiscard]] timestamp now() const noexcept override {
    return timestamp{std::chrono::nanoseconds(wall_ns_.load(std::memory_order_acquire))};
  }
  [[nodiscard]] monotonic_time monotonic() const noexcept override {
    return monotonic_time{std::chrono::nanoseconds(monotonic_ns_.load(std::memory_order_acquire))};
  }

  /// Moves both clocks forward by `step` (which must not be negative).
  void advance(std::chrono::nanoseconds step) noexcept {
    assert(step.count() >= 0 && "manual_clock::advance: time only moves forward; use set()");
    wall_ns_.fetch_add(step.count(), std::memory_order_acq_rel);
    monotonic_ns_.fetch_add(step.count(), std::memory_order_acq_rel);
  }
  /// Sets the wall clock (it may go backwards, as a real one can); the monotonic clock stays.
  void set(timestamp wall) noexcept {
    wall_ns_.store(wall.time_since_epoch().count(), std::memory_order_release);
  }

 private:
  std::atomic<std::int64_t> wall_ns_;
  std::atomic<std::int64_t> monotonic_ns_{1'000'000'000};
};

}  // namespace keel
