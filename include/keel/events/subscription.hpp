#pragma once
/// @file keel/events/subscription.hpp
/// @brief A subscription to the global order (or a category of it): catch up from a stored
/// checkpoint, then follow live appends, woken by LISTEN/NOTIFY with a poll as fallback, across
/// Postgres restarts; every committed event is delivered in order, none skipped.
///
/// @code
/// keel::events::subscription orders({.conninfo = url, .name = "email-receipts", .category = "order"},
///     [](const keel::events::recorded_event& e) -> keel::result<void> {
///       if (e.type == "order_paid") return send_receipt(e);   // an error: retried, never skipped
///       return {};
///     });
/// orders.start().value();
/// @endcode
///
/// Delivery is at least once: the checkpoint is saved after events are handled, so after a
/// crash the events since the last checkpoint are handled again. For exactly-once effects in
/// Postgres, write the effect and store::save_checkpoint in one transaction (an async projection).
#include <keel/core/result.hpp>
#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::events {

struct subscription_options {
  /// Where to connect: a URL or key=value conninfo. The subscription opens two connections: one
  /// to read, one to LISTEN.
  std::string conninfo;
  /// The checkpoint's name in keel_events_checkpoints; empty keeps no checkpoint (every start
  /// begins at `start`).
  std::string name;
  /// Only this category (all of `$all` when empty), only these types (all when empty).
  std::string category;
  std::vector<std::string> types;
  /// Only this stream, instead of a category (its events in version order).
  std::string stream;
  /// Where to begin when no checkpoint is stored.
  all_position start = all_position::start();
  /// Events read per round trip.
  std::size_t page_size = 1000;
  /// The checkpoint is saved when the subscription catches up and at least every this many
  /// events while it catches up.
  std::size_t checkpoint_every = 1000;
  /// How long to wait for a notification before reading anyway (appends without NOTIFY, a
  /// notification lost with a connection).
  std::chrono::milliseconds poll_interval{1000};
  /// Retries of a failing handler and reconnects wait this long, doubling up to max_retry_delay.
  std::chrono::milliseconds min_retry_delay{10};
  std::chrono::milliseconds max_retry_delay{5000};
  /// Upcasters applied to every event before the handler sees it (must outlive this).
  const upcasters* upcast = nullptr;
  /// Lag gauges (and the store's counters) in these metrics, when set; must outlive this.
  events_metrics* metrics = nullptr;
};

/// What a subscription has done so far.
struct subscription_stats {
  all_position position;               ///< the last event handled (or where it began)
  std::uint64_t delivered = 0;         ///< events handled successfully
  std::uint64_t handler_failures = 0;  ///< handler errors (each event is retried until it succeeds)
  std::uint64_t reconnects = 0;        ///< connections to Postgres re-opened after a failure
  std::uint64_t wakeups = 0;           ///< notifications that woke it
  bool caught_up = false;              ///< everything below the horizon was handled at the last read
  bool running = false;
  error_code last_error;  ///< the most recent failure, cleared by the next success
};

/// Follows the global order on a thread of its own and calls the handler for each event, in
/// order. The handler runs on that thread, one event at a time; an error it returns makes the
/// subscription try the same event again after a backoff (it never moves past an event that
/// was not handled).
class subscription {
 public:
  using handler_type = std::function<result<void>(const recorded_event&)>;

  subscription(subscription_options options, handler_type handler);
  /// Stops and joins the thread.
  ~subscription();
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;

  /// Loads the checkpoint and starts the thread. @returns errc::invalid_stream_name for a bad
  /// category, or the Postgres error when the checkpoint cannot be read (nothing started).
  [[nodiscard]] result<void> start();
  /// Stops after the event being handled (if any), saves the checkpoint, joins. Idempotent.
  void stop();

  [[nodiscard]] subscription_stats stats() const;
  /// Waits until an event at or after `position` was handled (true), or `timeout` passes.
  [[nodiscard]] bool wait_for(all_position position, std::chrono::milliseconds timeout) const;
  /// Waits until `count` events were handled since start (true), or `timeout` passes.
  [[nodiscard]] bool wait_for_count(std::uint64_t count, std::chrono::milliseconds timeout) const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

}  // namespace keel::events
