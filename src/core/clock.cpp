#include <keel/core/clock.hpp>
#include <keel/core/time_text.hpp>

#include <fmt/format.h>

#include <ctime>
#include <iterator>

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

void append_utc(std::string& out, timestamp t) {
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  // Floor division, so a time before 1970 keeps a non-negative fraction.
  auto seconds = micros / 1'000'000;
  auto fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    --seconds;
  }
  const auto whole = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&whole, &utc);
  fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900,
                 utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, fraction);
}

std::string format_utc(timestamp t) {
  std::string out;
  append_utc(out, t);
  return out;
}

}  // namespace keel
