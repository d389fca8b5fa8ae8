#include <keel/core/clock.hpp>

namespace keel {

timestamp system_clock::now() const noexcept {
  return std::chrono::time_point_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now());
}

monotonic_time system_clock::monotonic() const noexcept {
  return std::chrono::steady_clock::now();
}

const system_clock& system_clock::instance() noexcept {
  static const system_clock clock;
  return clock;
}

}  // namespace keel
