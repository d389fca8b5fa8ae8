#pragma once
/// @file keel/events/metrics.hpp
/// @brief Prometheus metrics for keel::events, in a keel::metrics registry:
/// - `keel_events_appended_total`, `keel_events_append_conflicts_total` (wrong expected version)
///   and `keel_events_read_total`, counted by a store given these metrics (store_options::metrics);
/// - `keel_events_lag_events{reader}` and `keel_events_lag_seconds{reader}`: how far each
///   subscription, projection or consumer (by name) is behind — 0 when it caught up at its last
///   read; events are estimated from positions (a rolled-back append's position counts too);
/// - `keel_events_horizon_waiting_events` and `keel_events_oldest_transaction_seconds`: what
///   holds readers of `$all` back (a long transaction), set by observe_horizon().
#include <keel/core/metrics.hpp>

#include <string>
#include <string_view>

namespace keel::events {

struct horizon_status;

class events_metrics {
 public:
  explicit events_metrics(metrics::registry& registry);

  void appended(std::uint64_t events) noexcept { appended_.inc(events); }
  void conflict() noexcept { conflicts_.inc(); }
  void read(std::uint64_t events) noexcept { read_.inc(events); }
  /// Sets the lag gauges of `reader`.
  void lag(std::string_view reader, double events, double seconds);
  /// Sets the horizon gauges from store::horizon().
  void observe_horizon(const horizon_status& status) noexcept;

 private:
  metrics::counter& appended_;
  metrics::counter& conflicts_;
  metrics::counter& read_;
  metrics::family<metrics::gauge>& lag_events_;
  metrics::family<metrics::gauge>& lag_seconds_;
  metrics::gauge& waiting_;
  metrics::gauge& oldest_;
};

}  // namespace keel::events
