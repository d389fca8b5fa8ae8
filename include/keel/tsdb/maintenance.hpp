#pragma once
/// @file keel/tsdb/maintenance.hpp
/// @brief Retention and compaction on a schedule: every process may start one; a Postgres
/// advisory lock elects the one that runs them for the database's keel::tsdb schema.
#include <keel/core/metrics.hpp>
#include <keel/core/result.hpp>
#include <keel/tsdb/store.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace keel::tsdb {

/// Options of a maintenance scheduler.
struct maintenance_options {
  std::string conninfo;                                          ///< its own connection and store
  std::chrono::milliseconds interval = std::chrono::minutes(1);  ///< between the starts of runs
  std::size_t compact_below = 1024;                              ///< compact() arguments for every series
  std::size_t compact_target = 8192;
  store_options store{};  ///< units_per_second turns the wall clock into retention's "now"
  /// Where runs, failures and the last duration are counted (tsdb_maintenance_*); none when null.
  /// Must outlive the scheduler.
  metrics::registry* metrics = nullptr;
};

/// What a scheduler has done so far (also exported as metrics when a registry is given).
struct maintenance_stats {
  bool leader = false;         ///< holds the election lock (runs maintenance)
  std::uint64_t runs = 0;      ///< runs completed (retention, then compaction of every series)
  std::uint64_t failures = 0;  ///< runs that stopped on an error (retried next interval)
  double last_duration_seconds = 0;
  std::uint64_t blocks_dropped = 0;    ///< by retention, over all runs
  std::uint64_t blocks_compacted = 0;  ///< removed by compaction, over all runs
};

/// A background thread that, every interval, tries to become the maintainer (a session advisory
/// lock keyed by the schema, so one process per database schema runs it; when that process or
/// its connection dies, another one's next attempt takes over) and, while it is, applies
/// retention and compacts every series. Stops (and releases the lock) on destruction.
class maintenance {
 public:
  /// Connects and starts the thread. @returns the connection error when `conninfo` fails, or
  /// errc::invalid_argument for an interval <= 0.
  [[nodiscard]] static result<maintenance> start(maintenance_options options);

  maintenance(maintenance&&) noexcept;
  maintenance& operator=(maintenance&&) noexcept;
  ~maintenance();

  /// Runs now instead of at the next interval (no effect when not the leader).
  void wake();
  /// Stops the thread and closes the connection (releasing the lock). Idempotent.
  void stop();
  [[nodiscard]] maintenance_stats stats() const;

 private:
  struct state;
  explicit maintenance(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

}  // namespace keel::tsdb
