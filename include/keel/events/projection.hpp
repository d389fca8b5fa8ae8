#pragma once
/// @file keel/events/projection.hpp
/// @brief Async projections (and ones that refresh a materialized view): a daemon that folds the global order
/// (or a category) into your Postgres tables, writing each batch's effects and the projection's checkpoint in
/// one transaction, so every event takes effect exactly once even when the process is SIGKILLed or Postgres
/// restarts. Several processes may run the same projection: they take turns batch by batch (a
/// transaction-level advisory lock per projection), so one can die and the others go on.
///
/// @code
/// keel::events::projection totals({.conninfo = url, .name = "order-totals", .category = "order"},
///     [](keel::pg::connection& c, std::span<const keel::events::recorded_event> batch) -> keel::result<void>
///     {
///       for (const auto& e : batch) {   // inside the batch's transaction
///         auto done = c.query("INSERT INTO order_totals ... ON CONFLICT ... DO UPDATE ...", ...);
///         if (!done) return done.error();  // the whole batch rolls back and is tried again
///       }
///       return {};
///     });
/// totals.start().value();
/// @endcode
#include <keel/core/result.hpp>
#include <keel/events/metrics.hpp>
#include <keel/events/store.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace keel::events {

struct projection_options {
  std::string conninfo;
  /// The projection's name: its checkpoint in keel_events_checkpoints and its lock.
  std::string name;
  /// Only this category (all of `$all` when empty), only these types (all when empty).
  std::string category;
  std::vector<std::string> types;
  /// Events per transaction.
  std::size_t batch_size = 500;
  std::chrono::milliseconds poll_interval{1000};
  /// At least this long between the end of a batch that applied events and the next batch (0:
  /// none). For projections whose batch costs the same however many events it holds, such as
  /// refreshing a materialized view: what arrives meanwhile is folded into one batch.
  std::chrono::milliseconds min_batch_interval{0};
  std::chrono::milliseconds min_retry_delay{10};
  std::chrono::milliseconds max_retry_delay{5000};
  /// Upcasters applied to every event before the handler sees it (must outlive this).
  const upcasters* upcast = nullptr;
  /// Lag gauges (and the store's counters) in these metrics, when set; must outlive this.
  events_metrics* metrics = nullptr;
};

struct projection_stats {
  all_position position;       ///< where this process's last committed batch left the checkpoint
  std::uint64_t applied = 0;   ///< events this process applied in committed batches
  std::uint64_t batches = 0;   ///< batches this process committed
  std::uint64_t failures = 0;  ///< batches rolled back (apply failed, or Postgres did)
  bool caught_up = false;      ///< the last batch found nothing more below the horizon
  bool running = false;
  error_code last_error;
};

/// Runs a projection on a thread of its own: in a loop, one transaction takes the projection's
/// lock, reads the checkpoint, reads up to batch_size events after it, calls `apply` with them,
/// saves the checkpoint after the last one and commits. A failure rolls the batch back and it
/// is tried again after a backoff. Woken by appends' notifications like a subscription.
class projection {
 public:
  /// Runs inside the batch's transaction on `c`; an error rolls the whole batch back.
  using apply_type = std::function<result<void>(pg::connection& c, std::span<const recorded_event> batch)>;

  projection(projection_options options, apply_type apply);
  ~projection();
  projection(const projection&) = delete;
  projection& operator=(const projection&) = delete;

  /// Starts the thread. @returns errc::invalid_checkpoint_name, errc::invalid_stream_name (a bad
  /// category), errc::invalid_read (batch_size 0) or errc::subscription_running.
  [[nodiscard]] result<void> start();
  /// Stops after the batch in progress (committed or rolled back), joins. Idempotent.
  void stop();

  [[nodiscard]] projection_stats stats() const;
  /// Waits until this process's checkpoint reached `position` (true) or `timeout` passes.
  [[nodiscard]] bool wait_for(all_position position, std::chrono::milliseconds timeout) const;
  /// Waits until the projection caught up after the global order reached `position` as seen
  /// from the database (by whichever process), checking the stored checkpoint: for tests and
  /// "read your writes" of a read model.
  [[nodiscard]] static bool wait_for_checkpoint(pg::connection& c, std::string_view name,
                                                all_position position, std::chrono::milliseconds timeout);

  /// Drops what the projection built and replays it from the start: runs `reset` (e.g. TRUNCATE
  /// your tables) and deletes the checkpoint in one transaction under the projection's lock, so
  /// running projectors start over with the next batch.
  [[nodiscard]] static result<void> rebuild(pg::connection& c, std::string_view name,
                                            const std::function<result<void>(pg::connection&)>& reset);

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

struct view_refresh_options {
  /// REFRESH ... CONCURRENTLY: readers of the view are not blocked while it is rebuilt (the view
  /// needs a unique index); otherwise the refresh takes an ACCESS EXCLUSIVE lock on the view.
  bool concurrently = false;
};

/// A projection's apply that refreshes the materialized view `view` (a name, or schema.name;
/// quoted as an identifier, so never user text) in the batch's transaction: once a projection
/// with it has its checkpoint at a position, the view shows every event up to there. One
/// refresh per batch, whatever its size: give the projection a large batch_size and a
/// min_batch_interval. Throws std::invalid_argument for an empty name.
/// @code
/// keel::events::projection summary({.conninfo = url, .name = "order-summary", .category = "order",
///                                   .batch_size = 100'000, .min_batch_interval = 500ms},
///                                  keel::events::refresh_materialized_view("order_summary"));
/// @endcode
[[nodiscard]] projection::apply_type refresh_materialized_view(std::string view,
                                                               view_refresh_options options = {});

}  // namespace keel::events
