#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>

namespace keel::events {

events_metrics::events_metrics(metrics::registry& registry)
    : appended_(registry.add_counter("keel_events_appended_total", "Events appended.").get()),
      conflicts_(registry
                     .add_counter("keel_events_append_conflicts_total",
                                  "Appends refused because the stream was not at the expected version.")
                     .get()),
      read_(registry.add_counter("keel_events_read_total", "Events read (streams, $all, subscriptions).")
                .get()),
      lag_events_(registry.add_gauge("keel_events_lag_events",
                                     "Events a reader is behind the global order (estimated from positions).",
                                     {"reader"})),
      lag_seconds_(registry.add_gauge(
          "keel_events_lag_seconds",
          "Age of the last event a reader handled while it was behind; 0 when caught up.", {"reader"})),
      waiting_(
          registry
              .add_gauge(
                  "keel_events_horizon_waiting_events",
                  "Committed events readers of $all cannot see yet because an older transaction is open.")
              .get()),
      oldest_(
          registry
              .add_gauge(
                  "keel_events_oldest_transaction_seconds",
                  "How long the oldest open write transaction on the server has run (it holds the horizon).")
              .get()) {}

void events_metrics::lag(std::string_view reader, double events, double seconds) {
  lag_events_.labels({reader}).set(events);
  lag_seconds_.labels({reader}).set(seconds);
}

void events_metrics::observe_horizon(const horizon_status& status) noexcept {
  waiting_.set(static_cast<double>(status.events_waiting));
  oldest_.set(status.oldest_transaction_seconds);
}

}  // namespace keel::events
