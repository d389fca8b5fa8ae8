#pragma once
// Lag gauges for subscriptions, projections and consumers: 0 when the reader caught up at its
// last read; otherwise positions drawn since its position, and the age of what it last handled.
#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string_view>

namespace keel::events::detail {

inline void report_lag(const store& events, pg::connection& c, events_metrics* metrics,
                       std::string_view reader, bool caught_up, all_position at,
                       std::optional<timestamp> last_recorded) {
  if (metrics == nullptr) return;
  if (caught_up) {
    metrics->lag(reader, 0, 0);
    return;
  }
  double behind = 0;
  if (auto head = events.last_position(c))
    behind = static_cast<double>(std::max<std::int64_t>(0, *head - at.position));
  double seconds = 0;
  if (last_recorded) {
    seconds = std::max(
        0.0, std::chrono::duration<double>(std::chrono::system_clock::now() - *last_recorded).count());
  }
  metrics->lag(reader, behind, seconds);
}

}  // namespace keel::events::detail
